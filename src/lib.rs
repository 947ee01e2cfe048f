//! railyard: a GitOps reconciler for self-hosted apps.
//!
//! The pure core is [`model`] (config kinds, loading, validation, desired and observed state) and [`plan`]
//! (desired vs observed into a [`plan::Plan`]). Side effects live in [`source`] and the backends.
#![forbid(unsafe_code)]

pub mod backend;
pub mod build;
pub mod builder;
pub mod clock;
pub mod compose;
pub mod daemon;
pub mod error_chain;
pub mod export;
pub mod forge;
pub mod leader;
pub mod model;
pub mod notify;
pub mod outbound;
pub mod outcome;
pub mod pipeline;
pub mod plan;
pub mod previews;
pub mod progress;
pub mod proxy;
pub mod scaling;
pub mod secrets;
pub mod server;
pub mod settings;
pub mod source;
pub mod store;
pub mod targets;
pub mod telemetry;
pub mod windows;
