//! Tests of the scap reader.
