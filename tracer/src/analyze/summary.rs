//! `ktrace dns --summary`: per pod and per resolver counts and latency percentiles.
// OWNER: analysis helper.
