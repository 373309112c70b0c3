"""The link: host and device over one serial line, framed, checked and reliable.

- `framing`: COBS frames with a CRC32 (runs unchanged under MicroPython);
- `errors`: the link's errors;
- `connection`: the reliable layer, sans-IO (bytes in, events out, time passed in);
- `messages`: bounded request/reply messages carried as link payloads;
- `endpoint`: the thin blocking adapter over a port or a file descriptor.
"""
