//! The handles when the feature is on: the `metrics` crate's, registered once.

use std::time::Instant;

use ::metrics::{Counter, Histogram, Key, Label, Level, Metadata, Unit};

use super::Kind;

/// keygate's metrics are all of one level and target, for recorders that filter.
const METADATA: Metadata<'static> = Metadata::new("keygate", Level::INFO, Some("keygate"));

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|&(k, v)| Label::from_static_parts(k, v))
        .collect();
    Key::from_parts(name, labels)
}

/// A counter.
#[derive(Clone)]
pub(crate) struct Tally(Counter);

impl Default for Tally {
    fn default() -> Self {
        Tally(Counter::noop())
    }
}

impl Tally {
    pub(super) fn register(name: &'static str, labels: &[(&'static str, &'static str)]) -> Self {
        Tally(::metrics::with_recorder(|r| {
            r.register_counter(&key(name, labels), &METADATA)
        }))
    }

    #[inline]
    pub(crate) fn add_one(&self) {
        self.0.increment(1);
    }
}

/// A histogram of durations, in seconds.
pub(super) struct Timing(Histogram);

impl Default for Timing {
    fn default() -> Self {
        Timing(Histogram::noop())
    }
}

impl Timing {
    pub(super) fn register(name: &'static str, labels: &[(&'static str, &'static str)]) -> Self {
        Timing(::metrics::with_recorder(|r| {
            r.register_histogram(&key(name, labels), &METADATA)
        }))
    }

    pub(super) fn observe(&self, since: Stopwatch) {
        self.0.record(since.0.elapsed());
    }
}

/// When a wait started.
pub(crate) struct Stopwatch(Instant);

impl Stopwatch {
    pub(super) fn start() -> Self {
        Stopwatch(Instant::now())
    }
}

/// Tells the recorder installed now what each metric is.
pub(super) fn describe(descriptions: &[(&'static str, Kind, &'static str)]) {
    ::metrics::with_recorder(|r| {
        for &(name, kind, help) in descriptions {
            let unit = match kind {
                Kind::Counter => None,
                Kind::Seconds => Some(Unit::Seconds),
            };
            match kind {
                Kind::Counter => r.describe_counter(name.into(), unit, help.into()),
                Kind::Seconds => r.describe_histogram(name.into(), unit, help.into()),
            }
        }
    });
}
