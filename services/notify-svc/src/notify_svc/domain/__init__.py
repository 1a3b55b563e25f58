"""Pure notification logic: what to send to whom, how delivery outcomes move a notification. No I/O."""
