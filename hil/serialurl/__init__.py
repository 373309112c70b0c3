"""pyserial URL handlers of Ocula (`sim://`, `qemu://`, `labgrid://`): one `protocol_SCHEME.py` per kind
in `hil.ports.KINDS`; `hil.transport` registers this package."""
