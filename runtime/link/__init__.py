"""The link: host and device over one serial line, framed, checked and reliable.

- `framing`: COBS frames with a CRC32; `encode(payload)` and `Decoder.feed(bytes)`. Runs
  unchanged under MicroPython (the rig fixture imports it).
- `header`: the frame format inside a framed payload (header, types, hello, acks, resets);
- `connection`: the reliable layer, sans-IO: hello (version, frame size), sliding window,
  cumulative and selective acks, retransmission, duplicate suppression, flow control. Bytes in,
  events out, time passed in.
- `endpoint`: the thin blocking adapter over a port or a file descriptor: connect, send, recv,
  request, serve, flush, abort.
- `messages`: bounded request/reply messages (JSON header + binary blob) with typed field
  limits and a schema that checks requests and replies (the board's: `runtime.agent.api`).
- `errors`: `LinkError` and its kinds (timeout, closed, usage).
"""
