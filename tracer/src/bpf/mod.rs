//! Loading and attaching the kernel programs, reading the ring buffer, probing hooks.
