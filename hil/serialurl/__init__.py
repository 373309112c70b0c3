"""pyserial URL handlers of Ocula (`sim://`); `hil.transport` registers this package."""
