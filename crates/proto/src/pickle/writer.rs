//! Protocol-2 pickle writer.
