"""One ComponentResource per module; `platform.Platform` wires them together."""
