//! The handles when the feature is off: empty, so that every call compiles to nothing.

use super::Kind;

/// A counter that counts nothing.
#[derive(Clone, Default)]
pub(crate) struct Tally;

impl Tally {
    #[inline(always)]
    pub(super) fn register(_name: &'static str, _labels: &[(&'static str, &'static str)]) -> Self {
        Tally
    }

    #[inline(always)]
    pub(crate) fn add_one(&self) {}
}

/// A histogram that keeps nothing.
#[derive(Default)]
pub(super) struct Timing;

impl Timing {
    #[inline(always)]
    pub(super) fn register(_name: &'static str, _labels: &[(&'static str, &'static str)]) -> Self {
        Timing
    }

    #[inline(always)]
    pub(super) fn observe(&self, _since: Stopwatch) {}
}

/// Reads no clock.
pub(crate) struct Stopwatch;

impl Stopwatch {
    #[inline(always)]
    pub(super) fn start() -> Self {
        Stopwatch
    }
}

#[inline(always)]
pub(super) fn describe(_descriptions: &[(&'static str, Kind, &'static str)]) {}
