//! The status pages in a real browser: headless Chromium from Debian's packages driven through chromedriver, against
//! a daemon running real Docker apps. Screenshots of every page go to target/screenshots/.

use crate::support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use support::*;

const TOKEN: &str = "browser-test-token";
const WAIT: Duration = Duration::from_secs(60);

/// chromedriver on a free loopback port, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("chromedriver is needed ({error}): apt-get install chromium chromium-driver")
            });
        assert!(
            eventually(Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "chromedriver did not start"
        );
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    capabilities
        .insert("goog:chromeOptions".to_owned(), serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }));
    ClientBuilder::native()
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("chromium session")
}

async fn text(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Types the token into the "Sync now" form and presses it. A live update may redraw the form between finding and
/// typing (the element goes stale): the whole gesture is done again then, as a person would.
async fn sync_now(client: &Client) {
    let mut last_error = None;
    for _ in 0..20 {
        let attempt = async {
            let field = client.find(Locator::Css("form.sync input[name=token]")).await?;
            field.clear().await?;
            field.send_keys(TOKEN).await?;
            client.find(Locator::Css("#sync-now")).await?.click().await
        };
        match attempt.await {
            Ok(()) => return,
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the Sync now form never took the token: {last_error:?}");
}

/// Polls the open page (no reload) until `css` holds `expected`; what it held then (a live redraw may replace the
/// element before it is read again).
async fn wait_text(client: &Client, css: &str, expected: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let found = text(client, css).await;
        if found.contains(expected) {
            return found;
        }
        if std::time::Instant::now() > deadline {
            let source = client.source().await.unwrap_or_default();
            panic!("`{css}` never showed `{expected}`; it shows `{found}`; the page:\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    std::fs::write(dir.join(format!("{name}.png")), &png).expect("write screenshot");
    // A blank page compresses to a few kilobytes; a page with content does not.
    assert!(png.len() > 15_000, "{name}.png looks blank ({} bytes)", png.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_pages_show_state_diffs_and_history_and_update_live() {
    let image = busybox_image();
    let project = TestProject::with_web("browser", "one", "");
    let served = project.serve(&["--poll-interval", "1s", "--sync", "manual"], &[("RAILYARD_API_TOKEN", TOKEN)]);
    let base = format!("http://127.0.0.1:{}", served.port);
    served.wait_for("the pending plan", WAIT, |env| env["syncStatus"] == "outOfSync");

    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("profile");
    let client = browser(&driver, profile.path()).await;

    // The overview.
    client.goto(&format!("{base}/")).await.expect("open /");
    wait_text(&client, "#env-production h3", "out of sync").await;
    // A live redraw may replace the card while it is read: wait for it as for the state.
    wait_text(&client, "#env-production", "initial config").await;
    screenshot(&client, "overview").await;

    // The environment: the pending diff, then "Sync now" with the token.
    client.goto(&format!("{base}/env/production")).await.expect("open env");
    wait_text(&client, "#change-App-web", "create").await;
    // A live update may redraw the plan between two reads: wait for the diff itself.
    let diff = wait_text(&client, "#change-App-web pre.diff", "+    MESSAGE: one").await;
    assert!(diff.lines().count() > 10, "the whole diff: {diff}");
    let mut marked = 0;
    for _ in 0..20 {
        marked = client.find_all(Locator::Css("#change-App-web span.add")).await.map_or(0, |lines| lines.len());
        if marked > 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(marked > 10, "added lines are marked");
    screenshot(&client, "environment-pending").await;
    sync_now(&client).await;
    wait_text(&client, "h1", "synced").await;
    wait_text(&client, "#app-web .replicas", "1/1").await;
    wait_text(&client, "#app-web", "healthy").await;

    // The sync is recorded just after the page says synced: the history is read again until it holds it.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        client.goto(&format!("{base}/env/production/syncs")).await.expect("open history");
        let rows = client.find_all(Locator::Css("#history tr.sync")).await.expect("rows");
        let history = text(&client, "#history").await;
        if rows.len() == 2 && history.contains("synced") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "pending, then synced: {} rows, `{history}`", rows.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    screenshot(&client, "history").await;
    // The page updates itself live: a row found a moment ago may be replaced, so the link is found and clicked anew.
    let mut opened = false;
    for _ in 0..10 {
        let link = client.find(Locator::Css("#history tr.sync td a")).await;
        if let Ok(link) = link
            && link.click().await.is_ok()
        {
            opened = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(opened, "the newest sync's link opens");
    wait_text(&client, "#diff", "MESSAGE: one").await;
    screenshot(&client, "sync").await;

    // Live: a hostile commit arrives while the page is open; it updates without a reload and shows text, not markup.
    client.goto(&format!("{base}/env/production")).await.expect("open env");
    client.execute("window.stillTheSamePage = true;", vec![]).await.expect("mark page");
    project.write("apps/web.yaml", &web_app("web", &image, "two", ""));
    project.commit("<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">");
    wait_text(&client, "#change-App-web", "MESSAGE: two").await;
    wait_text(&client, ".commit .message", "<script>window.pwned = 1</script>").await;
    let state = client
        .execute("return [window.stillTheSamePage === true, window.pwned === undefined];", vec![])
        .await
        .expect("script");
    assert_eq!(state, serde_json::json!([true, true]), "the page updated in place and ran nothing from the commit");

    // An invalid commit: the error with file:line, the hostile name shown as text.
    project.write("apps/evil.yaml", "kind: App\nname: \"<script>window.pwned = 3</script>\"\nimage: x\n");
    project.commit("add an app with a hostile name");
    wait_text(&client, "#error", "apps/evil.yaml:2:7").await;
    assert!(text(&client, "#error").await.contains("App name `<script>window.pwned = 3</script>` is not a DNS label"));
    let pwned = client.execute("return window.pwned === undefined;", vec![]).await.expect("script");
    assert_eq!(pwned, serde_json::json!(true));
    screenshot(&client, "environment-invalid").await;

    // Phone width still shows the apps.
    client.set_window_size(390, 844).await.expect("resize");
    client.refresh().await.expect("reload");
    assert!(text(&client, "#app-web").await.contains("web"));
    screenshot(&client, "environment-phone").await;
    client.close().await.expect("close browser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_page_draws_replicas_cpu_scale_changes_and_schedule_boundaries() {
    let image = busybox_image();
    let project = TestProject::new("browser-chart");
    project.write("apps/web.yaml", &web_app("web", &image, "chart", "resources: { cpus: \"0.2\" }\n"));
    // Bounds that take turns every ten seconds, and a CPU target so that load is sampled every second.
    project.write(
        "scaling/web.yaml",
        "kind: ScalingRule\napp: web\nmin: 1\nmax: 3\ntargetCpuPercent: 50\nschedules:\n  \
         - { cron: \"0,20,40 * * * * *\", min: 2, max: 2 }\n  - { cron: \"10,30,50 * * * * *\", min: 1, max: 1 }\n",
    );
    let served = Served::start(
        &project.dir().display().to_string(),
        None,
        &["--poll-interval", "1h", "--drift-interval", "1h", "--scale-interval", "1s"],
        &[],
    );
    let base = format!("http://127.0.0.1:{}", served.port);
    served.wait_for("a schedule to set the bounds", WAIT, |env| {
        env["syncStatus"] == "synced" && !env["apps"][0]["scaling"]["setBy"].is_null()
    });

    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("profile");
    let client = browser(&driver, profile.path()).await;
    client.goto(&format!("{base}/env/production")).await.expect("open env");
    client.find(Locator::Css("#app-web a")).await.expect("the app's link").click().await.expect("open the app");
    wait_text(&client, "h1", "web").await;
    // Until a boundary has changed the count, reload: the page is drawn on the server.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        client.refresh().await.expect("reload");
        if text(&client, "#scale-events").await.contains("schedule") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no schedule's scale change listed:\n{}", served.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for mark in ["polyline.replicas", "polyline.cpu", "line.scale-event", "line.boundary"] {
        let found = client.find_all(Locator::Css(&format!("#load-chart {mark}"))).await.expect("query the chart");
        assert!(!found.is_empty(), "the chart has {mark}");
    }
    let points = client
        .find(Locator::Css("#load-chart polyline.replicas"))
        .await
        .expect("the replicas line")
        .attr("points")
        .await
        .expect("points")
        .unwrap_or_default();
    assert!(points.split(' ').count() >= 2, "the replicas are drawn over time: {points}");
    // The values drawn are those recorded. The left scale's top is labelled (`N replicas`, 200 high): every step of
    // the line sits at a whole count within the schedules' bounds (1 to 2). (The exact values against the recorded
    // data are checked on the in-memory backend: policies::the_app_page_draws_the_replicas_cpu_and_scale_changes_it_recorded.)
    let scale = text(&client, "#load-chart text").await;
    let top: f64 = scale.strip_suffix(" replicas").and_then(|n| n.parse().ok()).expect("the scale's label");
    let counts: Vec<f64> = points
        .split(' ')
        .filter_map(|pair| pair.split_once(',')?.1.parse::<f64>().ok())
        .map(|y| (200.0 - y) / 200.0 * top)
        .collect();
    assert!(
        counts.iter().all(|count| (count - count.round()).abs() < 0.01 && (1.0..=2.0).contains(&count.round())),
        "steps at other counts than the app ran at ({top} at the top): {counts:?} from {points}"
    );
    assert!(text(&client, ".scaling").await.contains("next "), "the next change is named");
    screenshot(&client, "app-chart").await;
    client.close().await.expect("close browser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_section_lists_runs_and_a_runs_page_shows_its_output_as_text() {
    use railyard::backend::{JobOutcome, JobTrigger};
    // The in-memory backend: what is drawn comes from the plan and the store, whatever ran the Jobs.
    let (_repo, served) = Served::in_memory(
        &[
            ("railyard.yaml", "kind: Project\nname: shop\ntimezone: Europe/Berlin\n"),
            ("apps/web.yaml", "kind: App\nname: web\nimage: web:1\nreplicas: 1\n"),
            (
                "jobs/migrate.yaml",
                "kind: Job\nname: migrate\nimageFrom: web\ncommand: [/web, migrate]\nhook: { before: [web] }\n",
            ),
            // Once a year: it runs only when asked to.
            ("jobs/nightly.yaml", "kind: Job\nname: nightly\nimage: tools:1\nschedule: \"0 0 3 1 1 *\"\n"),
        ],
        &[],
    );
    served.wait_for("the first sync", WAIT, |env| env["syncStatus"] == "synced");
    // A failed manual run whose output is hostile markup, recorded in serve's store as the daemon records runs.
    let now = railyard::daemon::now_ms();
    let failed = railyard::backend::JobRun {
        finished_at: now - 2_500,
        ..crate::support::job_run(
            "nightly",
            "production",
            JobTrigger::Manual { who: "alice".to_owned() },
            now - 5_000,
            JobOutcome::Failed { exit_code: Some(3), reason: "exited with 3".to_owned() },
            "cleaning\n<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">\nerror: disk full\n",
        )
    };
    let db = railyard::store::SqliteDb::open(&served.state_dir).expect("serve's store");
    let id = db.record_job_run(&failed, Default::default()).expect("recorded").expect("a new run");

    let base = format!("http://127.0.0.1:{}", served.port);
    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("profile");
    let client = browser(&driver, profile.path()).await;
    client.goto(&format!("{base}/env/production")).await.expect("open env");
    wait_text(&client, "#jobs #job-nightly", "failed").await;
    let nightly = text(&client, "#job-nightly").await;
    assert!(nightly.contains("0 0 3 1 1 *") && nightly.contains("Europe/Berlin"), "cron and time zone: {nightly}");
    assert!(nightly.contains("2.5 s") && nightly.contains("manual by alice"), "duration and trigger: {nightly}");
    assert_eq!(text(&client, "#job-nightly .exit-code").await, "3");
    assert!(text(&client, "#job-migrate").await.contains("before web"), "the apps a hook runs before");
    screenshot(&client, "environment-jobs").await;

    let mut opened = false;
    for _ in 0..10 {
        if let Ok(link) = client.find(Locator::Css("#job-nightly td.last a")).await
            && link.click().await.is_ok()
        {
            opened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(opened, "the last run's link opens");
    wait_text(&client, "h1", &format!("run {id}")).await;
    let output = text(&client, "#output").await;
    assert!(output.contains("<script>window.pwned = 1</script><img src=x"), "the output as text: {output}");
    assert!(output.contains("error: disk full"), "{output}");
    let pwned = client.execute("return window.pwned === undefined;", vec![]).await.expect("script");
    assert_eq!(pwned, serde_json::json!(true), "nothing of the output ran");
    assert!(text(&client, "#run").await.contains("Exit code: 3"));
    screenshot(&client, "job-run").await;
    client.close().await.expect("close browser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_lists_who_did_what_and_filters_it() {
    let tokens = tempfile::tempdir().expect("token directory");
    let token_file = tokens.path().join("tokens");
    std::fs::write(&token_file, "ops:audit-ops-token-41\nci:audit-ci-token-93 envs=pr-* verbs=sync\n").expect("tokens");
    let (_repo, served) = Served::in_memory(
        &[("railyard.yaml", "kind: Project\nname: shop\n"), ("apps/web.yaml", "kind: App\nname: web\nimage: web:1\n")],
        &[("RAILYARD_API_TOKEN_FILE", token_file.to_str().expect("path"))],
    );
    served.wait_for("the first sync", WAIT, |env| env["syncStatus"] == "synced");
    let post = |token: &str, forwarded: &str| {
        let authorization = format!("Bearer {token}");
        let headers = [("Authorization", authorization.as_str()), ("X-Forwarded-For", forwarded)];
        http(served.port, "POST", "/api/v1/sync?env=production", &headers, b"").0
    };
    assert_eq!(post("audit-ops-token-41", "198.51.100.7"), 202);
    assert_eq!(post("audit-ci-token-93", "<img src=x onerror=\"window.pwned = 1\">"), 403);
    assert_eq!(post("a-wrong-token", "203.0.113.50"), 401);

    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("profile");
    let client = browser(&driver, profile.path()).await;
    client.goto(&format!("http://127.0.0.1:{}/", served.port)).await.expect("open overview");
    client.find(Locator::Css("header nav a[href='/audit']")).await.expect("the Audit link").click().await.expect("go");
    wait_text(&client, "#audit", "sync production").await;
    let table = text(&client, "#audit").await;
    assert!(table.contains("sync production") && table.contains("198.51.100.7"), "{table}");
    assert!(table.contains("may not sync environment `production`"), "why ci was refused: {table}");
    assert!(table.contains("anonymous (unauthenticated)"), "{table}");
    assert!(!table.contains("audit-ops-token-41") && !table.contains("a-wrong-token"), "no token shows: {table}");
    screenshot(&client, "audit").await;

    client.find(Locator::Css("select[name=outcome] option[value=refused]")).await.expect("option").click().await.ok();
    client.find(Locator::Css("form.filters button")).await.expect("filter").click().await.expect("submit");
    wait_text(&client, "#audit", "refused").await;
    let rows = client.find_all(Locator::Css("#audit tr.entry")).await.expect("rows");
    assert_eq!(rows.len(), 2, "ci's and the wrong token's attempts");
    let filtered = text(&client, "#audit").await;
    assert!(!filtered.contains("accepted"), "{filtered}");
    let pwned = client.execute("return window.pwned === undefined;", vec![]).await.expect("script");
    assert_eq!(pwned, serde_json::json!(true), "a hostile header is shown, never run");
    client.close().await.expect("close browser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_view_shows_replicas_output_and_tails_it_live() {
    let image = busybox_image();
    let project = TestProject::new("browser-logs");
    let talker = |version: &str| {
        format!(
            "kind: App\nname: talker\nimage: {image}\npull: never\nreplicas: 2\nstopGracePeriod: 1s\n\
             env: {{ VERSION: {version} }}\n\
             command: [\"sh\", \"-c\", \"i=0; while true; do i=$((i+1)); echo \\\"$VERSION GET /orders/$i 200 in 3ms\\\"; \
             [ $((i % 4)) = 0 ] && echo \\\"warning: slow query on orders ($i)\\\" >&2; sleep 0.5; done\"]\n"
        )
    };
    project.write("apps/talker.yaml", &talker("v1"));
    let served = Served::start(
        &project.dir().display().to_string(),
        None,
        &["--poll-interval", "1h", "--drift-interval", "1h", "--caddy-admin", "none"],
        &[("RAILYARD_API_TOKEN", TOKEN)],
    );
    served.wait_for("the first sync", WAIT, |env| env["syncStatus"] == "synced");
    let base = format!("http://127.0.0.1:{}", served.port);
    std::thread::sleep(Duration::from_secs(3));

    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("profile");
    let client = browser(&driver, profile.path()).await;
    client.goto(&format!("{base}/env/production/apps/talker")).await.expect("open the app");
    wait_text(&client, "#log-lines", "GET /orders/").await;
    wait_text(&client, "#logs-live", "live").await;
    assert_eq!(text(&client, "#logs-live").await, "live", "the tail is open");
    let shown = text(&client, "#log-lines").await;
    let count = shown.lines().count();
    // The tail adds lines while the page is open, without a reload.
    let deadline = std::time::Instant::now() + WAIT;
    while text(&client, "#log-lines").await.lines().count() < count + 4 {
        assert!(std::time::Instant::now() < deadline, "no new lines came live:\n{shown}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let stderr = client.find_all(Locator::Css("#log-lines span.line.stderr")).await.expect("stderr lines");
    assert!(!stderr.is_empty(), "stderr is marked apart");
    client
        .execute("document.querySelector('#logs').previousElementSibling.scrollIntoView()", vec![])
        .await
        .expect("scroll");
    screenshot(&client, "app-logs").await;
    // The filter hides what does not match as it is typed.
    client
        .find(Locator::Css("#log-form input[name=filter]"))
        .await
        .expect("filter")
        .send_keys("slow")
        .await
        .expect("type");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let visible = text(&client, "#log-lines").await;
    assert!(visible.lines().all(|line| line.contains("slow query")), "only matching lines stay visible:\n{visible}");
    client.find(Locator::Css("#log-form input[name=filter]")).await.expect("filter").clear().await.expect("clear");

    // A deploy replaces the replicas: the open page's tail goes on with the new ones.
    project.write("apps/talker.yaml", &talker("v2"));
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(http(served.port, "POST", "/api/v1/sync", &[("Authorization", &bearer)], b"").0, 202);
    wait_text(&client, "#log-lines", "v2 GET /orders/").await;

    // A submitted filter keeps its value in the box; the page is still redrawn live (the box is not focused), and
    // the tail goes on.
    client.goto(&format!("{base}/env/production/apps/talker?filter=orders")).await.expect("open filtered");
    wait_text(&client, "#logs-live", "live").await;
    client
        .execute("document.activeElement.blur(); document.querySelector('main').dataset.old = '1'", vec![])
        .await
        .expect("mark");
    project.write("apps/talker.yaml", &talker("v3"));
    assert_eq!(http(served.port, "POST", "/api/v1/sync", &[("Authorization", &bearer)], b"").0, 202);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let old =
            client.execute("return document.querySelector('main').dataset.old || ''", vec![]).await.expect("read");
        if old.as_str() == Some("") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the page was never redrawn while a filter was set");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_text(&client, "#log-lines", "v3 GET /orders/").await;
    client.close().await.expect("close browser");
}
