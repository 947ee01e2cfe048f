//! Scaling at run time: which bounds a ScalingRule's schedules put in force ([`schedule`]) and how many replicas the
//! CPU autoscaler asks for within them ([`decide`]). Both are pure: the caller brings the clock and the samples.

pub mod decide;
pub mod schedule;

pub use decide::{Autoscaler, Decision, Reason};
pub use schedule::{Bounds, BoundsSource, NextChange, ScheduleError, bounds_at, next_change};
