"""Host tools for hardware-in-the-loop rigs: transports, simulated board, pytest plugin, power."""
