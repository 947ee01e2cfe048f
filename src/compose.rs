//! Compose's vocabulary that the Docker backend and `railyard export compose` share, pure: a health check as the
//! command Docker and Compose run.

use crate::model::desired::Probe;

/// The check as a command run inside the container, as Docker and Compose run health checks. HTTP checks use the
/// image's `wget` or `curl`, TCP checks its `nc` (with `-z`, or busybox's `-w 1`), through `/bin/sh`. Validation
/// keeps paths free of quotes and spaces. `None` when there is no check.
pub fn health_test(probe: &Probe) -> Option<Vec<String>> {
    let shell = |script: String| Some(vec!["CMD-SHELL".to_owned(), script]);
    match probe {
        Probe::Http { path, port } => {
            let url = format!("http://127.0.0.1:{port}{path}");
            shell(format!("wget -q --spider '{url}' || curl -fsS -o /dev/null '{url}'"))
        }
        Probe::Tcp { port } => shell(format!("nc -z 127.0.0.1 {port} || nc -w 1 127.0.0.1 {port} </dev/null")),
        Probe::Command(command) => Some(std::iter::once("CMD".to_owned()).chain(command.iter().cloned()).collect()),
        Probe::Running => None,
    }
}
