//! The one shape every analysis stage has: DNS pairing, the DNS findings
//! detectors, kernel drops, connection failures and fabric correlation.
//!
//! A stage is fed inputs in time order, is told when time passes (so it can
//! report what will never complete) and is told when input ends. The pipeline
//! owns the output buffers and drains them after each call, so a stage never
//! allocates a result vector per input.

/// An analysis stage: inputs in, typed results out.
pub trait Detector {
    /// What the stage consumes (a decoded DNS message, a transaction, a drop record, …).
    type Input;
    /// What the stage produces (a transaction, a finding, a drop row, …).
    type Output;

    /// One input, in time order. Results that are complete now go to `out`.
    fn push(&mut self, input: Self::Input, out: &mut Vec<Self::Output>);

    /// Time has reached `now_ns` (monotonic ns of the observing node): report
    /// what can no longer change (timed-out queries, settled chains, …).
    fn expire(&mut self, now_ns: u64, out: &mut Vec<Self::Output>);

    /// End of input: report everything still pending.
    fn finish(&mut self, out: &mut Vec<Self::Output>);
}
