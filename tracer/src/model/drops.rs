//! Typed values of the drops side (drop rows, connection failures, fabric
//! loss). Placeholder: helper `drops` fills this in.
