"""The normative protocol specification, its wire vectors and the conformance kit."""
