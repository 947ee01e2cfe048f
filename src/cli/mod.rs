//! The command line's parts, one file per command family; the arguments (clap) apart from the handlers.

pub mod args;
pub mod daemon_client;
pub mod doctor;
pub mod export;
pub mod jobs;
pub mod logs;
pub mod output;
pub mod plan_apply;
pub mod replica_args;
pub mod secret;
pub mod serve;
pub mod serve_args;
pub mod store;
pub mod target;
pub mod target_args;
