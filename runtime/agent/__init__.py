"""The device agent: serves the link on a serial device and owns the board's flash.

- `bundlefmt`: the bundle format and its bounded, never-evaluating manifest parser;
- `ed25519`: pure-Python signature verification (the device needs no native crypto);
- `store`: staging chunk store, A/B slots, boot state, all written atomically;
- `api`: the board API, declared once: every request, its fields, reply, errors and limits;
- `service`: the agent's handlers of those requests, plain functions (agent, fields, blob);
- `health`: the health check of a slot on trial (hashes, one inference per artifact);
- `boot`: the boot ROM that picks a slot, runs the agent from it and rolls back;
- `serve`: the agent process: boot checks, then the link's Endpoint on a port.
"""
