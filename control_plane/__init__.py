"""The control plane: zones, devices, library, schedule, alerts, users, audit, reports; HTTP API."""
