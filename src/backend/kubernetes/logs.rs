//! App logs on Kubernetes: each of the app's pods' log through the pod log API (`timestamps=true`, `sinceSeconds`,
//! `tailLines`, `follow`), merged as lines arrive. The API gives one stream per container, stdout and stderr
//! together, so every line's stream is `output`. A replica is the pod's place (from 1) among the app's pods sorted
//! by name: pods have no number of their own, and a pod that is replaced gets another place. Only the app's own
//! container is read (a pod may have sidecars), and a pod whose log cannot be read (crash-looping, evicted) is an
//! error of its replica in the answer, not of the whole read.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;

use super::KubernetesError;
use super::cluster::Cluster;
use super::mapping::selector_labels;
use crate::backend::{LogLine, LogQuery, LogSource, LogStream};
use crate::model::Environment;

/// The merged log of `app`'s pods in `env` that `query` asks for. A pod still waiting to start has no log yet and
/// is left out.
pub(super) async fn read(
    cluster: &Cluster,
    env: &Environment,
    app: &str,
    query: &LogQuery,
) -> Result<LogStream, KubernetesError> {
    let selector: Vec<String> =
        selector_labels(&env.project, app).into_iter().map(|(key, value)| format!("{key}={value}")).collect();
    let mut pods = cluster.pods(&env.project, &selector.join(",")).await?;
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let params = params(app, query, crate::clock::now_ms() / 1000);
    let mut streams = Vec::new();
    for (place, pod) in pods.iter().enumerate() {
        let number = u32::try_from(place + 1).unwrap_or(u32::MAX);
        if query.replica.is_some_and(|wanted| wanted != number) || !has_started(pod) {
            continue;
        }
        let Some(name) = pod.metadata.name.as_deref() else { continue };
        let stream = match cluster.pod_log_lines(&env.project, name, &params).await {
            Ok(lines) => lines.map(move |line| Ok(LogLine::from_read(number, LogSource::Output, line?))).boxed(),
            Err(error) => futures_util::stream::iter([Err(error.into())]).boxed() as LogStream,
        };
        streams.push(stream);
    }
    Ok(futures_util::stream::select_all(streams).boxed())
}

/// The pod log API's parameters for `query` of `app`'s container (named after the app), at `now_seconds`.
fn params(app: &str, query: &LogQuery, now_seconds: i64) -> LogParams {
    LogParams {
        container: Some(app.to_owned()),
        follow: query.follow,
        timestamps: true,
        tail_lines: Some(i64::try_from(query.tail_lines).unwrap_or(i64::MAX)),
        // The API takes a duration, at least 1 s.
        since_seconds: query.since_seconds.map(|since| (now_seconds - since).max(1)),
        ..LogParams::default()
    }
}

fn has_started(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|status| status.phase.as_deref());
    !matches!(phase, Some("Pending"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_becomes_the_pod_log_apis_parameters() {
        let query = LogQuery { replica: None, since_seconds: Some(1_000), tail_lines: 50, follow: true };
        let params = params("web", &query, 1_300);
        assert!(params.follow && params.timestamps);
        assert_eq!(params.container.as_deref(), Some("web"));
        assert_eq!((params.tail_lines, params.since_seconds), (Some(50), Some(300)));
    }
}
