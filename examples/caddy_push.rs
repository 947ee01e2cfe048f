//! Caddy push timings for bench/caddy.sh: 1,000 domains pushed in one config, then one route change, each from the
//! moment railyard decides it to Caddy's admin API having loaded it (median of 5 runs), and where the time of a route
//! change with 1,000 domains goes: reading Caddy's config, railyard's rewrite and serialisation, Caddy's reload.
//!
//! Usage: caddy_push <admin-url> <http-listen> <https-listen>

use std::collections::BTreeMap;
use std::time::Instant;

use railyard::model::kinds::TlsMode;
use railyard::model::{DomainSpec, Environment};
use railyard::proxy::{Caddy, CaddySettings, UpstreamMode, with_domains};

fn domains(count: usize) -> (Vec<DomainSpec>, BTreeMap<String, Vec<String>>) {
    let specs: Vec<DomainSpec> = (0..count)
        .map(|index| DomainSpec {
            host: format!("app-{index}.bench.test"),
            aliases: vec![format!("www.app-{index}.bench.test")],
            app: format!("app-{index}"),
            port: "http".to_owned(),
            container_port: 8080,
            tls: TlsMode::Off,
            acme_email: None,
        })
        .collect();
    let upstreams =
        specs.iter().enumerate().map(|(i, d)| (d.host.clone(), vec![format!("127.0.0.1:{}", 20000 + i)])).collect();
    (specs, upstreams)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, admin, http, https] = args.as_slice() else {
        return Err("usage: caddy_push <admin> <http> <https>".into());
    };
    let caddy = Caddy::new(CaddySettings {
        admin: admin.clone(),
        http: http.clone(),
        https: https.clone(),
        acme_email: None,
        upstreams: UpstreamMode::Host,
    });
    let settings = caddy.settings().clone();
    let (specs, mut upstreams) = domains(1000);
    let mut full = Vec::new();
    let mut change = Vec::new();
    for run in 0..5 {
        let env = Environment::production(&format!("bench{run}"));
        let started = Instant::now();
        assert!(caddy.sync(&env, &specs, &upstreams).await?.pushed, "the first push must load");
        full.push(started.elapsed().as_secs_f64() * 1000.0);
        upstreams.insert(specs[0].host.clone(), vec![format!("127.0.0.1:{}", 40000 + run)]);
        let started = Instant::now();
        let switch = caddy.sync(&env, &specs, &upstreams).await?;
        change.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(switch.pushed, "the change must load");
        caddy.drain(&switch).await;
        let cleared = caddy.sync(&env, &[], &BTreeMap::new()).await?;
        caddy.drain(&cleared).await;
    }
    let steps = change_steps(admin, &settings, &specs, &mut upstreams).await?;
    let (few, mut few_upstreams) = domains(10);
    let mut small_change = Vec::new();
    let env = Environment::production("benchsmall");
    let loaded = caddy.sync(&env, &few, &few_upstreams).await?;
    caddy.drain(&loaded).await;
    for run in 0..5 {
        few_upstreams.insert(few[0].host.clone(), vec![format!("127.0.0.1:{}", 41000 + run)]);
        let started = Instant::now();
        let switch = caddy.sync(&env, &few, &few_upstreams).await?;
        small_change.push(started.elapsed().as_secs_f64() * 1000.0);
        caddy.drain(&switch).await;
    }
    caddy.sync(&env, &[], &BTreeMap::new()).await?;
    println!("1000 domains in one config: {:.0} ms (target < 500 ms)", median(full));
    println!("one route change, 10 domains loaded: {:.0} ms (target < 50 ms)", median(small_change));
    println!("one route change, 1000 domains loaded: {:.0} ms", median(change));
    let [read, parse, rewrite, serialise, reload] = steps;
    println!(
        "  of which: GET /config/ {read:.1} ms, parse {parse:.1} ms, rewrite {rewrite:.1} ms, serialise {serialise:.1} ms, \
         POST /load (Caddy's reload) {reload:.0} ms"
    );
    Ok(())
}

/// Medians of the steps of a route change with `specs` loaded, done by hand as `Caddy::sync` does them: GET the
/// config, parse it, rewrite railyard's routes, serialise, POST /load.
async fn change_steps(
    admin: &str,
    settings: &CaddySettings,
    specs: &[DomainSpec],
    upstreams: &mut BTreeMap<String, Vec<String>>,
) -> Result<[f64; 5], Box<dyn std::error::Error>> {
    let client = reqwest::Client::new();
    let env = Environment::production("benchsteps");
    let caddy = Caddy::new(settings.clone());
    caddy.sync(&env, specs, upstreams).await?;
    let mut samples: [Vec<f64>; 5] = Default::default();
    for run in 0..5 {
        upstreams.insert(specs[0].host.clone(), vec![format!("127.0.0.1:{}", 42000 + run)]);
        let mut clock = Instant::now();
        let mut lap = |step: usize| {
            samples[step].push(clock.elapsed().as_secs_f64() * 1000.0);
            clock = Instant::now();
        };
        let body = client.get(format!("{admin}/config/")).send().await?.error_for_status()?.bytes().await?;
        lap(0);
        let current: serde_json::Value = serde_json::from_slice(&body)?;
        lap(1);
        let wanted = with_domains(&current, &env, specs, upstreams, settings);
        assert_ne!(wanted, current, "the change must differ");
        lap(2);
        let body = serde_json::to_vec(&wanted)?;
        lap(3);
        client
            .post(format!("{admin}/load"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await?
            .error_for_status()?;
        lap(4);
    }
    caddy.sync(&env, &[], &BTreeMap::new()).await?;
    Ok(samples.map(median))
}
