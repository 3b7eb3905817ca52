"""The conformance cases, one module per area; importing this package registers them all."""

from loa.devices.conformance.cases import control, hostile, media, priority, session  # noqa: F401
