"""The device agent: serves the link on a serial device and owns the board's flash.

- `bundlefmt`: the bundle format and its bounded, never-evaluating manifest parser;
- `ed25519`: pure-Python signature verification (the device needs no native crypto);
- `store`: staging chunk store, A/B slots, boot state, all written atomically;
- `service`: the requests the link can make, as plain functions (fields, blob) -> reply;
- `rpc`: requests and replies as link messages (the link's bounded codec);
- `health`: the health check of a slot on trial (hashes, one inference per artifact);
- `boot`: the boot ROM that picks a slot, runs the agent from it and rolls back;
- `serve`: the agent process: boot checks, then the link's Endpoint on a port (`wire`).
"""
