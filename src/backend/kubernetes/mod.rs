//! The Kubernetes backend: the same desired state, run on a cluster. For now the mapping from railyard's desired
//! state to Kubernetes objects, which `railyard export kubernetes` prints and the backend's apply will send.

pub mod mapping;
