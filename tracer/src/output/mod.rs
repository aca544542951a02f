//! Output sinks: the live table and JSON Lines.
