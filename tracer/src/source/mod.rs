//! Sources of records: the kernel ring buffer (live) or capture files (replay).
