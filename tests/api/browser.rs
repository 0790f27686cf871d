//! The dashboard and the JavaScript client in a real headless Chromium, driven
//! over WebDriver (chromedriver + fantoccini): what a person sees and clicks,
//! against the real server. Screenshots go to `target/browser-screenshots/`.
//! Without Debian's `chromium` and `chromium-driver` the tests say `SKIPPED`
//! and pass, except under `CI=true`, where they fail; `.ci/run` installs both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use herald::auth::Minter;
use herald::domain::Role;
use herald::proto::{self as pb, executor_command::Command as Cmd, report_event_request::Event as Ev};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, next, skip};

const CHROMIUM: &str = "/usr/bin/chromium";

/// One Chromium at a time: the machine has two cores, and a starved browser
/// makes timing-based assertions flaky.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn chromedriver() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("chromedriver")).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file())
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("browser-screenshots")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A chromedriver child process and one Chromium session. Dropping it kills
/// chromedriver's whole process group, browser included.
pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: Child,
    test: &'static str,
    shots: usize,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group id is the child's pid (process_group(0) below). Not through
        // the `kill` command: procps-ng 4.0.2 turns `kill -KILL -29999` into
        // kill(-2, …), and a group id starting with 1 into kill(-1, …): every
        // process on the machine.
        if let Ok(group) = i32::try_from(self.driver.id())
            && group > 1
        {
            // SAFETY: kill(2) with a negative pid signals that process group only.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// A browser, or `None` after [`skip`] (which fails the test under `CI=true`).
    pub(crate) async fn start(test: &'static str) -> Option<Self> {
        let driver_bin = chromedriver();
        if !Path::new(CHROMIUM).is_file() || driver_bin.is_none() {
            skip(test, &format!("{CHROMIUM} and chromedriver (apt-get install chromium chromium-driver)"));
            return None;
        }
        let turn = ONE_BROWSER.lock().await;
        let port = free_port();
        let mut cmd = Command::new(driver_bin.expect("checked"));
        cmd.arg(format!("--port={port}")).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd.spawn().expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port} within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(caps) = caps else { unreachable!() };
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        let client = match builder.capabilities(caps).connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(c) => c,
            Err(e) => panic!("a Chromium session through chromedriver: {e}"),
        };
        std::fs::create_dir_all(screenshot_dir()).expect("screenshot dir");
        // Only this run's pictures under this test's prefix.
        for old in std::fs::read_dir(screenshot_dir()).into_iter().flatten().flatten() {
            if old.file_name().to_string_lossy().starts_with(&format!("{test}-")) {
                let _ = std::fs::remove_file(old.path());
            }
        }
        Some(Self { client, driver, test, shots: 0, _profile: profile, _turn: turn })
    }

    /// Ends the session cleanly (the drop kills whatever is left).
    pub(crate) async fn finish(self) {
        let _ = self.client.clone().close().await;
    }

    pub(crate) async fn shot(&mut self, label: &str) {
        self.shots += 1;
        let path = screenshot_dir().join(format!("{}-{:02}-{label}.png", self.test, self.shots));
        match self.client.screenshot().await {
            Ok(png) => std::fs::write(&path, png).expect("write screenshot"),
            Err(e) => eprintln!("screenshot {label} failed: {e}"),
        }
    }

    pub(crate) async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until `ok` holds, for up to 15 s; on timeout takes a
    /// screenshot and fails with the last value and the page's text.
    pub(crate) async fn eventually(
        &mut self,
        what: &str,
        script: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = self.js(script).await;
            if ok(&v) {
                return v;
            }
            if Instant::now() > deadline {
                self.shot(&format!("timeout-{}", what.replace(' ', "-"))).await;
                let text = self.js("return document.body.innerText").await;
                panic!(
                    "timed out waiting for {what}; last value {v}\npage text:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the first element matching `css`, or null.
    async fn text(&self, css: &str) -> Value {
        self.js(&format!("return document.querySelector({css:?})?.textContent ?? null")).await
    }

    async fn click(&self, css: &str) {
        let el = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}"));
        el.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}"));
        el.clear().await.expect("clear");
        el.send_keys(text).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Opens the dashboard and signs in by pasting `token`.
    async fn sign_in(&mut self, app: &TestApp, token: &str) {
        self.client.goto(&app.http("/")).await.expect("open the dashboard");
        self.type_into("#token", token).await;
        self.click("#login-button").await;
    }

    async fn connection_state(&self) -> String {
        self.js("return document.getElementById('connection').dataset.state")
            .await
            .as_str()
            .unwrap_or("")
            .into()
    }

    async fn wait_live(&mut self) {
        self.eventually(
            "the connection to be live",
            "return document.getElementById('connection').dataset.state",
            |v| v == "open",
        )
        .await;
    }

    /// Every seq the page was given on `channel`, in order.
    async fn seqs(&self, channel: &str) -> Vec<u64> {
        let v = self.js("return document.getElementById('herald-debug').dataset.seqs || '{}'").await;
        let all: Value = serde_json::from_str(v.as_str().unwrap_or("{}")).expect("debug seqs are JSON");
        all[channel].as_array().into_iter().flatten().filter_map(Value::as_u64).collect()
    }
}

fn attr_of(css: &str, attr: &str) -> String {
    format!("const e = document.querySelector({css:?}); return e ? e.getAttribute({attr:?}) : null")
}

fn agent_token(app: &TestApp) -> String {
    app.token("exec-1", &[Role::Agent], None)
}

fn approver_token(app: &TestApp) -> String {
    app.token("alice", &[Role::Approver], None)
}

async fn create_task(app: &TestApp, token: &str, title: &str) -> String {
    let req = pb::CreateTaskRequest { title: title.into(), ..Default::default() };
    app.tasks(token).create_task(req).await.expect("create task").into_inner().id
}

async fn progress(app: &TestApp, token: &str, id: &str, pct: u32, step: &str) {
    let req = pb::ReportProgressRequest {
        id: id.into(),
        progress: pct,
        step: step.into(),
        tool: "http".into(),
        message: format!("{step} at {pct}%"),
        error: false,
    };
    app.tasks(token).report_progress(req).await.expect("report progress");
}

/// Every seq of a topic channel, from Herald's own log.
async fn logged_seqs(app: &TestApp, token: &str, channel: &str) -> Vec<u64> {
    let req = pb::ListEventsRequest { channel: channel.into(), after_seq: 0, limit: 1000 };
    let events = app.events(token).list_events(req).await.expect("list events").into_inner().events;
    events.iter().map(|e| e.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_tasks_live_and_an_approval_reaches_the_executor() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let Some(mut b) = Browser::start("live").await else { return };
    let (agent, approver) = (agent_token(&app), approver_token(&app));
    let first = create_task(&app, &agent, "Index the docs").await;
    progress(&app, &agent, &first, 10, "fetch").await;

    // A task that exists before sign-in comes from the HTTP load.
    b.sign_in(&app, &approver).await;
    b.wait_live().await;
    let row = format!("tr[data-task-id='{first}']");
    b.eventually("the loaded task", &attr_of(&row, "data-progress"), |v| v == "10").await;
    b.shot("signed-in").await;

    // One created over gRPC appears, and its bar moves.
    let second = create_task(&app, &agent, "Summarise the report").await;
    let row2 = format!("tr[data-task-id='{second}']");
    b.eventually("the new task row", &attr_of(&row2, "data-status"), |v| v == "pending").await;
    let title = b.js(&format!("return document.querySelector(\"{row2} th\").textContent")).await;
    assert_eq!(title, "Summarise the report");
    progress(&app, &agent, &second, 30, "read").await;
    b.eventually("progress 30", &attr_of(&row2, "data-progress"), |v| v == "30").await;
    progress(&app, &agent, &second, 70, "write").await;
    b.eventually("progress 70", &attr_of(&row2, "data-progress"), |v| v == "70").await;
    let bar = b.js(&format!("return document.querySelector(\"{row2} progress\").value")).await;
    assert_eq!(bar, 70);
    let detail = b.js(&format!("return document.querySelector(\"{row2} .detail\").textContent")).await;
    assert_eq!(detail, "write · http · write at 70%");
    b.shot("progress").await;

    // An executor attaches (its agent shows up), and a run from the form asks for approval.
    let reg =
        pb::RegisterAgentRequest { agent_id: "writer".into(), name: "Writer".into(), ..Default::default() };
    app.agents(&agent).register_agent(reg).await.expect("register");
    let mut executor = app.executors(&agent);
    let attached = executor
        .attach(pb::AttachRequest { agent_id: "writer".into(), ..Default::default() })
        .await
        .expect("attach");
    let session = crate::helpers::session_of(&attached);
    let mut commands = attached.into_inner();
    b.eventually("the agent", &attr_of("li[data-agent-id='writer']", "data-agent-status"), |v| v.is_string())
        .await;
    b.type_into("#run-agent", "writer").await;
    b.type_into("#run-input", "email the team").await;
    b.click("#run-button").await;
    let Some(Cmd::Execute(run)) = next(&mut commands).await.command else { panic!("an EXECUTE first") };
    let id = run.execution_id.clone();
    assert_eq!(serde_json::from_str::<Value>(&run.input).unwrap(), json!({ "prompt": "email the team" }));
    let report = |event| {
        crate::helpers::in_session(
            &session,
            pb::ReportEventRequest { execution_id: id.clone(), event: Some(event) },
        )
    };
    executor
        .report_event(report(Ev::Thinking(pb::Thinking { text: "who is the team?".into() })))
        .await
        .unwrap();
    let ask = pb::RequestApprovalRequest {
        execution_id: id.clone(),
        tool_call_id: "call-1".into(),
        action: "send_email".into(),
        arguments: json!({ "to": "team@example.com" }).to_string(),
        ..Default::default()
    };
    let approval = executor
        .request_approval(crate::helpers::in_session(&session, ask))
        .await
        .expect("request approval")
        .into_inner();
    let card = format!("li[data-approval-id='{}']", approval.id);
    b.eventually("the approval card", &attr_of(&card, "data-state"), |v| v == "pending").await;
    let exec_view = format!("section[data-execution-id='{id}']");
    b.eventually(
        "the thinking in the execution view",
        &format!("return document.querySelector(\"{exec_view} ol\")?.textContent || ''"),
        |v| v.as_str().is_some_and(|t| t.contains("who is the team?")),
    )
    .await;
    b.shot("approval-pending").await;

    b.click(&format!("{card} button[data-action='approve']")).await;
    let Some(Cmd::Decision(d)) = next(&mut commands).await.command else { panic!("the decision") };
    let decision = d.decision.expect("a decision");
    assert_eq!((d.approval_id.as_str(), decision.kind()), (approval.id.as_str(), pb::DecisionKind::Approve));
    assert_eq!(decision.decided_by, "alice");
    b.eventually("the decided card", &attr_of(&card, "data-decided-by"), |v| v == "alice").await;
    let outcome = b.js(&format!("return document.querySelector(\"{card} .outcome\").textContent")).await;
    assert_eq!(outcome, "Approved by alice");

    // A second request, edited: the arguments as JSON in a textarea.
    let ask = pb::RequestApprovalRequest {
        execution_id: id.clone(),
        tool_call_id: "call-2".into(),
        action: "send_email".into(),
        arguments: json!({ "to": "team@example.com", "body": "hi" }).to_string(),
        allowed_decisions: vec![pb::DecisionKind::Approve.into(), pb::DecisionKind::Edit.into()],
        arguments_schema: json!({ "type": "object", "required": ["to"] }).to_string(),
        ..Default::default()
    };
    let second = executor
        .request_approval(crate::helpers::in_session(&session, ask))
        .await
        .expect("request approval")
        .into_inner();
    let card2 = format!("li[data-approval-id='{}']", second.id);
    b.eventually("the second card", &attr_of(&card2, "data-state"), |v| v == "pending").await;
    b.click(&format!("{card2} button[data-action='edit']")).await;
    let edited = json!({ "to": "boss@example.com", "body": "hi" });
    b.type_into(&format!("{card2} textarea"), &edited.to_string()).await;
    b.type_into(&format!("{card2} input.comment"), "not the whole team").await;
    let actions_shown =
        b.js(&format!("return document.querySelector(\"{card2} .actions\").offsetParent !== null")).await;
    assert_eq!(actions_shown, false, "editing hides Approve/Edit");
    b.shot("editing").await;
    b.click(&format!("{card2} button[data-action='save-edit']")).await;
    let Some(Cmd::Decision(d)) = next(&mut commands).await.command else { panic!("the edit") };
    let decision = d.decision.expect("a decision");
    assert_eq!((d.approval_id.as_str(), decision.kind()), (second.id.as_str(), pb::DecisionKind::Edit));
    assert_eq!(serde_json::from_str::<Value>(&decision.arguments).unwrap(), edited);
    assert_eq!((decision.decided_by.as_str(), decision.message.as_str()), ("alice", "not the whole team"));
    b.eventually("the edited card", &attr_of(&card2, "data-decision"), |v| v == "edit").await;
    let outcome = b.js(&format!("return document.querySelector(\"{card2} .outcome\").textContent")).await;
    assert_eq!(outcome, "Edited and approved by alice — “not the whole team”");

    let result =
        pb::ToolResult { tool_call_id: "call-1".into(), result: "{\"sent\":true}".into(), is_error: false };
    executor.report_event(report(Ev::ToolResult(result))).await.unwrap();
    executor.report_event(report(Ev::MessageDelta(pb::MessageDelta { text: "Sent.".into() }))).await.unwrap();
    executor.report_event(report(Ev::Complete(pb::Complete { output: "done".into() }))).await.unwrap();
    b.eventually("the completed execution", &attr_of(&exec_view, "data-status"), |v| v == "completed").await;
    let reply = b.js(&format!("return document.querySelector(\"{exec_view} .reply\").textContent")).await;
    assert_eq!(reply, "Sent.");
    b.js(&format!("document.querySelector(\"{exec_view}\").scrollIntoView(); return true")).await;
    b.shot("approved-and-completed").await;
    b.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_resumes_after_a_restart_without_gaps_or_duplicates() {
    let mut app = TestApp::spawn(Backend::Sqlite).await;
    let Some(mut b) = Browser::start("resume").await else { return };
    let (agent, viewer) = (agent_token(&app), app.token("watcher", &[Role::Viewer], None));
    b.sign_in(&app, &viewer).await;
    b.wait_live().await;
    let task = create_task(&app, &agent, "Survive a restart").await;
    progress(&app, &agent, &task, 10, "before").await;
    let row = format!("tr[data-task-id='{task}']");
    b.eventually("progress 10", &attr_of(&row, "data-progress"), |v| v == "10").await;
    b.shot("before-restart").await;

    // Herald goes away long enough for the page to back off a few times, comes
    // back on the same port, and events happen before the page is back: it
    // can only get them by resuming. Tried again in the unlikely case that a
    // retry lands inside that window.
    let mut missed = Vec::new();
    let mut pct = 10;
    for round in 0..3 {
        app = app.restart_same_port(Duration::from_millis(2500)).await;
        let attempt = b.js(&attr_of("#connection", "data-attempt")).await;
        let state = b.connection_state().await;
        if round == 0 {
            b.shot("reconnecting").await;
        }
        let mut made = Vec::new();
        for _ in 0..3 {
            pct += 10;
            progress(&app, &agent, &task, pct, "after").await;
            made.push(pct);
        }
        let still_away = b.connection_state().await;
        eprintln!(
            "round {round}: page {state} (attempt {attempt}) after restart, {still_away} after the events"
        );
        if state == "reconnecting" && still_away == "reconnecting" {
            missed = made;
            break;
        }
    }
    assert!(!missed.is_empty(), "the page was never away while events happened");
    let other = create_task(&app, &agent, "Born after the restart").await;
    b.wait_live().await;
    b.eventually("the missed progress", &attr_of(&row, "data-progress"), |v| *v == json!(pct.to_string()))
        .await;
    b.eventually("the new task", &attr_of(&format!("tr[data-task-id='{other}']"), "data-status"), |v| {
        v == "pending"
    })
    .await;
    b.shot("resumed").await;

    // Exactly Herald's own log of task_updates: every event once, in order.
    let expected = logged_seqs(&app, &viewer, "task_updates").await;
    let seen = b.seqs("task_updates").await;
    assert_eq!(seen, expected, "the page saw {seen:?}; Herald logged {expected:?}");
    assert!(missed.len() == 3 && expected.len() >= 5);
    b.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_visibly_and_good_ones_are_refreshed() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let Some(mut b) = Browser::start("tokens").await else { return };

    // Not a JWT at all: the page says so.
    b.sign_in(&app, "not-a-token").await;
    b.eventually("the not-a-JWT message", "return document.getElementById('login-error').textContent", |v| {
        v.as_str().is_some_and(|t| t.contains("not a Herald token"))
    })
    .await;

    // A JWT Herald did not sign: refused, visibly, and the page stays on sign-in.
    let forged = Minter::hs256(b"some-other-secret-that-is-32-bytes-long!")
        .mint("mallory", &[Role::Admin], None, Duration::from_secs(3600))
        .expect("mint");
    b.sign_in(&app, &forged).await;
    let message = b
        .eventually("the refusal", "return document.getElementById('login-error').textContent", |v| {
            v.as_str().is_some_and(|t| t.contains("Herald refused the token"))
        })
        .await;
    assert!(
        b.client.find(Locator::Css("#login-error")).await.unwrap().is_displayed().await.unwrap(),
        "{message}"
    );
    assert_eq!(b.js("return document.getElementById('dashboard').hidden").await, true);
    b.shot("refused").await;

    // The client on its own: a refused handshake ends in `closed` with an
    // error, not a reconnect loop; a token about to expire is refreshed on the
    // open socket; without a way to refresh, 4001 closes it with an error.
    // Three seconds to live, and the same subject as the long one.
    let short = Minter::hs256(crate::helpers::SECRET.as_bytes())
        .mint("alice", &[Role::Approver], None, Duration::from_secs(3))
        .expect("mint");
    let long = app.token("alice", &[Role::Approver], None);
    let script = r#"
        const [forged, short, long, done] = arguments;
        import('/herald-client.js').then(async ({ HeraldClient }) => {
          const watch = (c) => {
            const log = { states: [], frames: [] };
            c.on('state', (s) => log.states.push(s.state));
            c.on('frame', (f) => log.frames.push(f.type));
            return log;
          };
          const closed = (c) => new Promise((resolve) => {
            if (c.state === 'closed') return resolve();
            c.on('state', (s) => s.state === 'closed' && resolve());
          });
          const wait = (ms) => new Promise((r) => setTimeout(r, ms));
          const bad = new HeraldClient({ token: forged, autoConnect: false, reconnect: { initialDelay: 50 } });
          const badLog = watch(bad);
          bad.connect();
          const refreshed = new HeraldClient({ token: short, getToken: async () => long, autoConnect: false });
          const refreshedLog = watch(refreshed);
          refreshed.connect();
          const expiring = new HeraldClient({ token: short, autoConnect: false });
          const expiringLog = watch(expiring);
          expiring.connect();
          await Promise.race([closed(bad), wait(5000)]);
          await wait(1000); // a reconnect loop would show up here
          await Promise.race([closed(expiring), wait(12000)]);
          await wait(1500); // past the short token's expiry for `refreshed` too
          const result = {
            bad: { state: bad.state, code: bad.error?.code, message: bad.error?.message, states: [...badLog.states] },
            refreshed: { state: refreshed.state, token: refreshed.token === long, states: [...refreshedLog.states], frames: [...refreshedLog.frames] },
            expiring: { state: expiring.state, code: expiring.error?.code, states: [...expiringLog.states] },
          };
          refreshed.close();
          done(result);
        }).catch((e) => done({ failed: String(e) }));
    "#;
    let started = Instant::now();
    let r = b
        .client
        .execute_async(script, vec![json!(forged), json!(short), json!(long)])
        .await
        .expect("the client script runs");
    eprintln!("client scenarios after {:?}: {r:#}", started.elapsed());
    assert_eq!(r["bad"]["state"], "closed", "{r:#}");
    assert_eq!(r["bad"]["code"], "unauthenticated", "{r:#}");
    assert_eq!(r["bad"]["states"], json!(["connecting", "closed"]), "no reconnect loop: {r:#}");
    assert!(r["bad"]["message"].as_str().unwrap().contains("refused the token"), "{r:#}");
    assert_eq!(r["refreshed"]["state"], "open", "{r:#}");
    assert_eq!(r["refreshed"]["token"], true, "{r:#}");
    assert!(r["refreshed"]["frames"].as_array().unwrap().contains(&json!("token_refreshed")), "{r:#}");
    assert_eq!(r["refreshed"]["states"], json!(["connecting", "open"]), "never dropped: {r:#}");
    assert_eq!(r["expiring"]["state"], "closed", "{r:#}");
    assert_eq!(r["expiring"]["code"], "token_expired", "{r:#}");

    // The dashboard asks a person for a new token before the old one expires
    // and hands it over on the open socket: the page stays live past the
    // first token's expiry, without reconnecting.
    let minted = Instant::now();
    let brief = Minter::hs256(crate::helpers::SECRET.as_bytes())
        .mint("alice", &[Role::Approver], None, Duration::from_secs(10))
        .expect("mint");
    b.sign_in(&app, &brief).await;
    b.wait_live().await;
    let banner = "const f = document.getElementById('refresh-form'); return f.hidden ? null : f.textContent";
    b.eventually("the refresh banner", banner, |v| {
        v.as_str().is_some_and(|t| t.contains("Your token expires in"))
    })
    .await;
    assert!(minted.elapsed() < Duration::from_secs(10), "asked before the expiry");
    b.shot("refresh-asked").await;
    b.type_into("#refresh-token", &long).await;
    b.click("#refresh-button").await;
    let refreshes = "return document.getElementById('herald-debug').dataset.tokenRefreshes || '0'";
    b.eventually("Herald's token_refreshed", refreshes, |v| v == "1").await;
    assert_eq!(b.js("return document.getElementById('refresh-form').hidden").await, true);
    tokio::time::sleep(Duration::from_secs(11).saturating_sub(minted.elapsed())).await;
    assert_eq!(b.connection_state().await, "open", "still live after the first token expired");
    assert_eq!(b.js(&attr_of("#connection", "data-attempt")).await, "0", "never reconnected");
    let task = create_task(&app, &agent_token(&app), "After the refresh").await;
    b.eventually(
        "a task after the refresh",
        &attr_of(&format!("tr[data-task-id='{task}']"), "data-status"),
        |v| v == "pending",
    )
    .await;
    b.finish().await;
}

/// A page on another origin than Herald's: a refused handshake whose cause
/// the page cannot read is `unknown`, not `down`; an unreachable Herald is
/// `down`; the backoff is capped (5 s by default) and configurable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handshake_is_unknown_or_down_and_the_backoff_is_capped() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let Some(b) = Browser::start("origins").await else { return };
    // localhost is another origin than 127.0.0.1, where the client connects.
    let port = app.addr.port();
    b.client.goto(&format!("http://localhost:{port}/healthz")).await.expect("open a page of another origin");
    let forged = Minter::hs256(b"some-other-secret-that-is-32-bytes-long!")
        .mint("mallory", &[Role::Admin], None, Duration::from_secs(3600))
        .expect("mint");
    let script = r#"
        const [port, closedPort, forged, done] = arguments;
        import('/herald-client.js').then(async ({ HeraldClient }) => {
          const wait = (ms) => new Promise((r) => setTimeout(r, ms));
          const settled = (c) => new Promise((resolve) => c.on('state', (s) => s.state !== 'connecting' && resolve(s)));
          const cross = new HeraldClient({ url: `ws://127.0.0.1:${port}/ws`, token: forged, autoConnect: false,
                                           reconnect: { initialDelay: 5000 } });
          const crossState = settled(cross);
          cross.connect();
          const s = await Promise.race([crossState, wait(10000).then(() => ({ state: 'timeout' }))]);
          cross.close();
          const down = new HeraldClient({ url: `ws://127.0.0.1:${closedPort}/ws`, token: forged, autoConnect: false,
                                          reconnect: { initialDelay: 10, factor: 10, maxDelay: 40 } });
          const retries = [];
          down.on('state', (st) => st.state === 'reconnecting' && retries.push({ delay: st.delay, cause: st.cause }));
          down.connect();
          await wait(1500);
          down.close();
          const defaults = new HeraldClient({ url: 'ws://127.0.0.1:9/ws', token: forged, autoConnect: false }).reconnectOptions;
          done({ cross: { state: s.state, cause: s.cause ?? null, code: s.error?.code ?? null }, retries, defaults });
        }).catch((e) => done({ failed: String(e && e.stack || e) }));
    "#;
    let closed_port = free_port();
    let r = b
        .client
        .execute_async(script, vec![json!(port), json!(closed_port), json!(forged)])
        .await
        .expect("the client script runs");
    assert!(r.get("failed").is_none(), "{r:#}");
    assert_eq!(r["cross"], json!({ "state": "reconnecting", "cause": "unknown", "code": null }), "{r:#}");
    let retries = r["retries"].as_array().unwrap();
    assert!(retries.len() >= 3, "{r:#}");
    assert!(retries.iter().all(|t| t["cause"] == "down" && t["delay"].as_u64().unwrap() <= 40), "{r:#}");
    assert_eq!(r["defaults"]["maxDelay"], 5000, "{r:#}");
    b.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_stay_responsive() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let Some(mut b) = Browser::start("thousand").await else { return };
    let agent = agent_token(&app);
    // Created concurrently: the writer batches them.
    let mut ids = Vec::new();
    for chunk in 0..10 {
        let titles: Vec<String> = (0..100).map(|i| format!("Task {}", chunk * 100 + i)).collect();
        let creates = titles.iter().map(|t| create_task(&app, &agent, t));
        ids.extend(futures_util::future::join_all(creates).await);
    }
    let started = Instant::now();
    b.sign_in(&app, &app.token("watcher", &[Role::Viewer], None)).await;
    b.wait_live().await;
    b.eventually("1,000 rows", "return document.querySelectorAll('#tasks tr').length", |v| v == 1000).await;
    let loaded = started.elapsed();

    // Long tasks (> 50 ms on the main thread) while a burst of 500 updates lands.
    b.js("window.__long = []; new PerformanceObserver((l) => { for (const e of l.getEntries()) \
          window.__long.push(e.duration) }).observe({ type: 'longtask' }); return true")
        .await;
    let burst = Instant::now();
    for round in 0..5u32 {
        let reports = ids.iter().step_by(10).map(|id| progress(&app, &agent, id, 10 + round * 20, "burst"));
        futures_util::future::join_all(reports).await;
    }
    let last = format!("tr[data-task-id='{}']", ids[ids.len() - 10]);
    b.eventually("the burst applied", &attr_of(&last, "data-progress"), |v| v == "90").await;
    let applied = burst.elapsed();
    let long: Vec<f64> = serde_json::from_value(b.js("return window.__long").await).unwrap_or_default();
    let worst = long.iter().cloned().fold(0.0, f64::max);
    let rows = b.js("return document.querySelectorAll('#tasks tr').length").await;
    let seen = b.seqs("task_updates").await.len();
    eprintln!(
        "1,000 tasks: loaded and rendered in {loaded:?}; 500 updates applied {applied:?} after the first was \
         sent; {} long tasks, the longest {worst:.0} ms",
        long.len()
    );
    b.shot("thousand").await;
    assert_eq!(rows, 1000, "rows are updated in place, not added");
    assert_eq!(seen, 500);
    assert!(worst < 1000.0, "the main thread was blocked for {worst} ms");
    b.finish().await;
}

/// The client's bookkeeping against a scripted server (a fake WebSocket in
/// the page): per-channel cursors, duplicates dropped, replies matched to
/// requests around `execute`'s extra `subscribed`, resume after 1012 and an
/// immediate reconnect after 4008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_resumes_each_channel_from_its_own_cursor() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let Some(b) = Browser::start("client").await else { return };
    b.client.goto(&app.http("/")).await.expect("open a page of Herald's origin");
    let script = r#"
        const done = arguments[arguments.length - 1];
        import('/herald-client.js').then(async ({ HeraldClient }) => {
          const sockets = [];
          class FakeSocket {
            constructor(url, protocols) {
              Object.assign(this, { url, protocols, sent: [] });
              sockets.push(this);
              setTimeout(() => this.server({ type: 'connection', status: 'connected', connection_id: `c${sockets.length}` }));
            }
            send(text) { this.sent.push(JSON.parse(text)); }
            close(code) { this.closedWith = code; }
            server(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
            drop(code) { this.onclose?.({ code }); }
          }
          const wait = (ms) => new Promise((r) => setTimeout(r, ms));
          const ev = (channel, seq) => ({ type: 'task_progress', seq, channel, data: {} });
          const subs = (ws) => Object.fromEntries(ws.sent.filter((f) => f.type === 'subscribe').map((f) => [f.channel, f.after_seq ?? null]));
          const c = new HeraldClient({
            url: 'ws://127.0.0.1:9/ws', token: 'x.eyJleHAiOjk5OTk5OTk5OTl9.y', WebSocket: FakeSocket,
            reconnect: { initialDelay: 10, maxDelay: 20 }, pingInterval: 0, authCheckUrl: null, autoConnect: false,
          });
          const got = { tasks: [], agents: [], execution: [] };
          const states = [];
          c.on('state', (s) => states.push(s.state));
          c.subscribe('task_updates', { afterSeq: 5, onEvent: (e) => got.tasks.push(e.seq) });
          c.subscribe('agent_status', { afterSeq: 2, onEvent: (e) => got.agents.push(e.seq) });
          c.connect();
          await wait(20);
          let ws = sockets[0];
          const first = { protocols: ws.protocols, subs: subs(ws) };
          ws.server({ type: 'subscribed', channel: 'task_updates', after_seq: 5 });
          ws.server({ type: 'subscribed', channel: 'agent_status', after_seq: 2 });
          ws.server(ev('task_updates', 6));
          ws.server(ev('task_updates', 8));
          ws.server(ev('agent_status', 7));
          ws.server(ev('task_updates', 8)); // a duplicate: dropped

          const exec = c.execute('writer', 'hi');
          const approve = c.approve('ap1', 'ok');
          await wait(0);
          ws.server({ type: 'execute_accepted', execution_id: 'e1', status: 'queued' });
          ws.server({ type: 'subscribed', channel: 'execution:e1', after_seq: 0 }); // Herald's own
          ws.server({ type: 'execution_created', seq: 9, channel: 'execution:e1', data: { status: 'queued' } });
          ws.server({ type: 'decided', approval_id: 'ap1', decision: { kind: 'approve', decided_by: 'alice' } });
          const accepted = await exec;
          const decided = await approve;
          c.subscribe('execution:e1', { afterSeq: 0, onEvent: (e) => got.execution.push(e.seq) }); // nothing lost meanwhile
          const refused = c.reject('nope');
          await wait(0);
          ws.server({ type: 'error', code: 'not_found', message: 'no approval nope' });
          const refusedCode = await refused.then(() => 'resolved', (e) => e.code);
          const unanswered = c.approve('ap2');

          ws.drop(1012); // Herald restarts
          const lost = await unanswered.then(() => 'resolved', (e) => e.code);
          await wait(100);
          ws = sockets[1];
          const resumed = subs(ws);
          for (const ch of Object.keys(resumed)) ws.server({ type: 'subscribed', channel: ch });
          ws.server(ev('task_updates', 8)); // replays overlap what was seen
          ws.server(ev('task_updates', 10));
          ws.server(ev('agent_status', 7));
          ws.server(ev('agent_status', 11));
          ws.server(ev('execution:e1', 9));
          ws.server(ev('execution:e1', 12));

          c.reconnectOptions.initialDelay = 5000;
          ws.drop(4008); // too slow: straight back
          await wait(50);
          const afterSlow = { sockets: sockets.length, subs: subs(sockets[2] || { sent: [] }) };
          c.close();
          const closed = await c.ping().then(() => 'resolved', (e) => e.code);

          // 4001 while getToken is still busy (a person pasting a token): not `open` meanwhile.
          const slow = new HeraldClient({
            url: 'ws://127.0.0.1:9/ws', token: 'x.eyJleHAiOjk5OTk5OTk5OTl9.y', WebSocket: FakeSocket,
            getToken: () => new Promise(() => {}), pingInterval: 0, authCheckUrl: null, autoConnect: false,
          });
          slow.connect();
          await wait(20);
          sockets[sockets.length - 1].drop(4001);
          await wait(20);
          const whileRefreshing = slow.state;
          slow.close();
          done({ first, got, accepted, decided: decided.type, refusedCode, lost, resumed, afterSlow, closed, states, whileRefreshing });
        }).catch((e) => done({ failed: String(e && e.stack || e) }));
    "#;
    let r = b.client.execute_async(script, vec![]).await.expect("the script runs");
    assert!(r.get("failed").is_none(), "{r:#}");
    assert_eq!(r["first"]["protocols"][0], "bearer", "the token travels as a subprotocol: {r:#}");
    assert_eq!(r["first"]["subs"], json!({ "task_updates": 5, "agent_status": 2 }), "{r:#}");
    assert_eq!(r["got"]["tasks"], json!([6, 8, 10]), "{r:#}");
    assert_eq!(r["got"]["agents"], json!([7, 11]), "{r:#}");
    assert_eq!(r["got"]["execution"], json!([9, 12]), "{r:#}");
    assert_eq!(r["accepted"]["execution_id"], "e1", "{r:#}");
    assert_eq!(r["decided"], "decided", "{r:#}");
    assert_eq!(r["refusedCode"], "not_found", "{r:#}");
    assert_eq!(r["lost"], "connection_lost", "{r:#}");
    assert_eq!(r["resumed"], json!({ "task_updates": 8, "agent_status": 7, "execution:e1": 9 }), "{r:#}");
    assert_eq!(r["afterSlow"]["sockets"], 3, "{r:#}");
    assert_eq!(r["afterSlow"]["subs"], json!({ "task_updates": 10, "agent_status": 11, "execution:e1": 12 }));
    assert_eq!(r["closed"], "closed", "{r:#}");
    assert_eq!(r["whileRefreshing"], "reconnecting", "{r:#}");
    assert_eq!(
        r["states"],
        json!(["connecting", "open", "reconnecting", "open", "reconnecting", "open", "closed"]),
        "{r:#}"
    );
    b.finish().await;
}

/// The static files need no browser: their types, no token, and cheap revalidation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_files_are_served_with_their_types_and_no_token() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let http = reqwest::Client::new();
    for (path, ty, needle) in [
        ("/", "text/html; charset=utf-8", "<script type=\"module\" src=\"/app.js\">"),
        ("/app.js", "text/javascript; charset=utf-8", "from \"/herald-client.js\""),
        ("/herald-client.js", "text/javascript; charset=utf-8", "export class HeraldClient"),
        ("/herald-client.d.ts", "application/typescript; charset=utf-8", "export declare class HeraldClient"),
        ("/style.css", "text/css; charset=utf-8", ":root"),
    ] {
        let resp = http.get(app.http(path)).send().await.expect("GET");
        assert_eq!(resp.status(), 200, "{path}");
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], ty, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let etag = headers["etag"].to_str().unwrap().to_string();
        assert!(resp.text().await.unwrap().contains(needle), "{path}");
        let again = http.get(app.http(path)).header("if-none-match", &etag).send().await.expect("GET");
        assert_eq!(again.status(), 304, "{path} revalidates with its ETag");
    }
    let page = http.get(app.http("/")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"), "{csp}");
    // The API behind it still wants a token.
    assert_eq!(http.get(app.http("/api/v1/tasks")).send().await.unwrap().status(), 401);
}

/// What a wall screen needs, loaded after a reload: a failed task's error on
/// a red bar, its progress timeline, decided approvals with who, when, how and
/// the edit's diff, a pending one's countdown, past executions' event logs with
/// times, a filter box, and section titles clear of the sticky header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_history_after_a_reload() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, |c| c.app.sweep_interval = Duration::from_millis(200)).await;
    let Some(mut b) = Browser::start("history").await else { return };
    let (agent, approver) = (agent_token(&app), approver_token(&app));
    // Enough rows that the page scrolls.
    let fillers = (0..40).map(|i| format!("Filler {i}")).collect::<Vec<_>>();
    futures_util::future::join_all(fillers.iter().map(|t| create_task(&app, &agent, t))).await;
    let crm = create_task(&app, &agent, "Sync the CRM").await;
    progress(&app, &agent, &crm, 20, "fetch").await;
    progress(&app, &agent, &crm, 60, "upload").await;
    let fail = pb::FailTaskRequest { id: crm.clone(), error: "salesforce: 401 invalid_grant".into() };
    app.tasks(&agent).fail_task(fail).await.expect("fail the task");
    let report_task = create_task(&app, &agent, "Summarise the report").await;
    progress(&app, &agent, &report_task, 30, "read").await;

    let reg = pb::RegisterAgentRequest { agent_id: "writer".into(), ..Default::default() };
    app.agents(&agent).register_agent(reg).await.expect("register");
    let mut executor = app.executors(&agent);
    let attached = executor
        .attach(pb::AttachRequest { agent_id: "writer".into(), ..Default::default() })
        .await
        .expect("attach");
    let session = crate::helpers::session_of(&attached);
    let mut commands = attached.into_inner();
    let req = pb::ExecuteRequest { agent_id: "writer".into(), ..Default::default() };
    let id = app.executions(&approver).execute(req).await.expect("execute").into_inner().id;
    let Some(Cmd::Execute(_)) = next(&mut commands).await.command else { panic!("an EXECUTE first") };
    let report = |event| {
        crate::helpers::in_session(
            &session,
            pb::ReportEventRequest { execution_id: id.clone(), event: Some(event) },
        )
    };
    executor.report_event(report(Ev::Thinking(pb::Thinking { text: "whom to write".into() }))).await.unwrap();
    let ask = |call: &str, deadline: Option<prost_types::Timestamp>| {
        let req = pb::RequestApprovalRequest {
            execution_id: id.clone(),
            tool_call_id: call.into(),
            action: "send_email".into(),
            arguments: json!({ "to": "team@example.com", "body": "hi" }).to_string(),
            allowed_decisions: vec![
                pb::DecisionKind::Approve.into(),
                pb::DecisionKind::Reject.into(),
                pb::DecisionKind::Edit.into(),
            ],
            deadline,
            deadline_decision: pb::DecisionKind::Reject.into(),
            ..Default::default()
        };
        crate::helpers::in_session(&session, req)
    };
    let edited = executor.request_approval(ask("call-1", None)).await.expect("ask").into_inner();
    let decide = json!({ "decision": "edit", "arguments": { "to": "boss@example.com", "body": "hi" },
                         "message": "only the boss" });
    let (status, body) = crate::helpers::Api::new(&app, &approver)
        .post(&format!("/approvals/{}/decide", edited.id), decide)
        .await;
    assert_eq!(status, 200, "{body}");
    let in_4m12 = std::time::SystemTime::now() + Duration::from_secs(4 * 60 + 12);
    let waiting =
        executor.request_approval(ask("call-2", Some(in_4m12.into()))).await.expect("ask").into_inner();

    b.sign_in(&app, &approver).await;
    b.wait_live().await;

    // The failed task: its error, not its last progress message, on a red bar.
    let row = format!("tr[data-task-id='{crm}']");
    b.eventually("the failed task", &attr_of(&row, "data-status"), |v| v == "failed").await;
    let detail = b.js(&format!("return document.querySelector(\"{row} .detail\").textContent")).await;
    assert_eq!(detail, "upload · http · error: salesforce: 401 invalid_grant");
    let colours = b
        .js(&format!(
            "const c = (s) => getComputedStyle(document.querySelector(s)).accentColor; \
             return [c(\"{row} progress\"), c(\"tr[data-task-id='{report_task}'] progress\"), \
                     getComputedStyle(document.getElementById('login-error')).color]"
        ))
        .await;
    assert_eq!(colours[0], colours[2], "a failed bar has the error colour: {colours}");
    assert_ne!(colours[0], colours[1], "a running bar does not: {colours}");

    // Its timeline, from GET …/progress: every step with its time and the gap since the one before.
    b.click(&format!("{row} button[data-action='timeline']")).await;
    let timeline = format!("tr[data-timeline-for='{crm}'] li");
    let steps = b
        .eventually(
            "the timeline",
            &format!("return [...document.querySelectorAll(\"{timeline}\")].map((li) => li.textContent)"),
            |v| v.as_array().is_some_and(|a| a.len() >= 3),
        )
        .await;
    let steps: Vec<String> = serde_json::from_value(steps).unwrap();
    assert!(steps.iter().any(|s| s.contains("20% · running · fetch")), "{steps:?}");
    assert!(steps.iter().any(|s| s.contains("60% · running · upload") && s.contains('+')), "{steps:?}");
    assert!(steps.last().unwrap().contains("failed"), "{steps:?}");
    b.shot("failed-task-timeline").await;

    // The decided approval: who, when, how, and what the edit changed.
    let card = format!("li[data-approval-id='{}']", edited.id);
    b.eventually("the decided card", &attr_of(&card, "data-decision"), |v| v == "edit").await;
    assert_eq!(b.text(&format!("{card} .outcome")).await, "Edited and approved by alice — “only the boss”");
    let when = b.text(&format!("{card} .decided-at")).await;
    assert!(when.as_str().is_some_and(|t| t.starts_with("decided at ") && (t.ends_with(" ago") || t.ends_with("just now"))), "{when}");
    let (del, ins) = (b.text(&format!("{card} .diff del")).await, b.text(&format!("{card} .diff ins")).await);
    assert!(
        del.as_str().is_some_and(|t| t.starts_with("- ") && t.contains(r#""to": "team@example.com""#)),
        "{del}"
    );
    assert!(
        ins.as_str().is_some_and(|t| t.starts_with("+ ") && t.contains(r#""to": "boss@example.com""#)),
        "{ins}"
    );

    // The pending one counts down to its deadline.
    let pending = format!("li[data-approval-id='{}']", waiting.id);
    let first = b
        .eventually(
            "the countdown",
            &format!("return document.querySelector(\"{pending} .deadline\")?.textContent"),
            |v| v.as_str().is_some_and(|t| t.starts_with("rejects automatically in 4 m ")),
        )
        .await;
    b.eventually(
        "the countdown to tick",
        &format!("return document.querySelector(\"{pending} .deadline\").textContent"),
        |v| *v != first,
    )
    .await;

    // The execution's log from its start, each event with its time.
    let log = format!("section[data-execution-id='{id}'] ol li");
    let entries = b
        .eventually(
            "the execution log",
            &format!("return [...document.querySelectorAll(\"{log}\")].map((li) => li.textContent)"),
            |v| {
                v.as_array()
                    .is_some_and(|a| a.iter().any(|t| t.as_str().unwrap_or("").contains("whom to write")))
            },
        )
        .await;
    let thinking =
        entries.as_array().unwrap().iter().find(|t| t.as_str().unwrap().contains("whom to write")).unwrap();
    let thinking = thinking.as_str().unwrap();
    assert!(thinking.contains(" ago") || thinking.contains("just now"), "{entries}");
    let stamps = b.js(&format!("return document.querySelectorAll(\"{log} time[datetime]\").length")).await;
    assert!(stamps.as_u64().unwrap() >= 3, "every entry has its time: {entries}");
    b.js(&format!("document.querySelector(\"{card}\").scrollIntoView(); return true")).await;
    b.shot("decided-and-pending").await;

    // A decision by a person replaces the countdown with who, when and how.
    b.click(&format!("{pending} button[data-action='approve']")).await;
    b.eventually("the approved card", &attr_of(&pending, "data-decided-by"), |v| v == "alice").await;
    assert_eq!(b.text(&format!("{pending} .outcome")).await, "Approved by alice");
    assert_eq!(b.text(&format!("{pending} .deadline")).await, Value::Null);

    // A deadline that passes decides by itself, and the card says so.
    let soon = std::time::SystemTime::now() + Duration::from_secs(4);
    let timed = executor.request_approval(ask("call-3", Some(soon.into()))).await.expect("ask").into_inner();
    let timed_card = format!("li[data-approval-id='{}']", timed.id);
    let countdown = format!("return document.querySelector(\"{timed_card} .deadline\")?.textContent");
    b.eventually("the short countdown", &countdown, |v| {
        v.as_str().is_some_and(|t| t.starts_with("rejects automatically in ") && t.ends_with(" s"))
    })
    .await;
    b.eventually("the deadline's decision", &attr_of(&timed_card, "data-decision"), |v| v == "reject").await;
    let outcome = b.text(&format!("{timed_card} .outcome")).await;
    assert!(
        outcome.as_str().is_some_and(|t| t.starts_with("Rejected automatically at the deadline")),
        "{outcome}"
    );
    assert_eq!(b.text(&format!("{timed_card} .deadline")).await, Value::Null);

    // The filter box keeps only what matches.
    b.type_into("#filter", "summarise").await;
    let shown = "return [...document.querySelectorAll('#tasks tr[data-task-id]')].filter((r) => !r.hidden)\
                 .map((r) => r.dataset.taskId)";
    b.eventually("the filtered rows", shown, |v| *v == json!([report_task])).await;
    let cards =
        b.js("return [...document.querySelectorAll('#approvals li')].filter((c) => !c.hidden).length").await;
    assert_eq!(cards, 0);
    assert_eq!(b.text("#tasks-count").await, "(1 of 42 shown)");
    b.shot("filtered").await;
    b.type_into("#filter", "").await;
    b.js("document.getElementById('filter').dispatchEvent(new Event('input')); return true").await;
    b.eventually(
        "every row back",
        "return [...document.querySelectorAll('#tasks tr[data-task-id]')].filter((r) => !r.hidden).length",
        |v| v == 42,
    )
    .await;

    // Jumping to a section leaves its title below the sticky header.
    b.click("nav.jump a[href='#tasks-title']").await;
    let clear = "const h = document.querySelector('header').getBoundingClientRect(); \
                 const t = document.getElementById('tasks-title').getBoundingClientRect(); \
                 return [window.scrollY, t.top, h.bottom]";
    let pos = b.eventually("the jump", clear, |v| v[0].as_f64().unwrap_or(0.0) > 0.0).await;
    assert!(pos[1].as_f64().unwrap() >= pos[2].as_f64().unwrap(), "title top, header bottom: {pos}");
    b.shot("jumped-to-tasks").await;

    // A failure seen live survives a reload of the page.
    let live = create_task(&app, &agent, "Fails while watched").await;
    progress(&app, &agent, &live, 40, "call").await;
    let fail = pb::FailTaskRequest { id: live.clone(), error: "quota exceeded".into() };
    app.tasks(&agent).fail_task(fail).await.expect("fail");
    let live_row = format!("tr[data-task-id='{live}']");
    let detail = format!("return document.querySelector(\"{live_row} .detail\")?.textContent");
    b.eventually("the live failure", &detail, |v| v == "call · http · error: quota exceeded").await;
    b.client.refresh().await.expect("reload");
    b.wait_live().await;
    b.eventually("the failure after a reload", &detail, |v| v == "call · http · error: quota exceeded").await;
    b.finish().await;
}

/// On an origin listed in `HERALD_CORS_ORIGINS` the client's token check can
/// read Herald's 401, so a refused token ends in `closed` with
/// `unauthenticated`, exactly as on Herald's own origin; a good token connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_listed_origin_a_refused_token_is_unauthenticated() {
    let port = free_port();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.addr.set_port(port);
        c.origins = herald::config::Origins::List(vec![format!("http://localhost:{port}")]);
    })
    .await;
    let Some(b) = Browser::start("cors").await else { return };
    // localhost is another origin than 127.0.0.1, where the client connects.
    b.client.goto(&format!("http://localhost:{port}/healthz")).await.expect("open a page of another origin");
    let forged = Minter::hs256(b"some-other-secret-that-is-32-bytes-long!")
        .mint("mallory", &[Role::Admin], None, Duration::from_secs(3600))
        .expect("mint");
    let good = approver_token(&app);
    let script = r#"
        const [port, forged, good, done] = arguments;
        import('/herald-client.js').then(async ({ HeraldClient }) => {
          const wait = (ms) => new Promise((r) => setTimeout(r, ms));
          const settled = (c) => new Promise((resolve) => c.on('state', (s) => s.state !== 'connecting' && resolve(s)));
          const run = async (token) => {
            const c = new HeraldClient({ url: `ws://127.0.0.1:${port}/ws`, token, autoConnect: false,
                                         reconnect: { initialDelay: 5000 } });
            const s = settled(c);
            c.connect();
            const r = await Promise.race([s, wait(10000).then(() => ({ state: 'timeout' }))]);
            c.close();
            return { state: r.state, cause: r.cause ?? null, code: r.error?.code ?? null };
          };
          done({ bad: await run(forged), good: await run(good) });
        }).catch((e) => done({ failed: String(e && e.stack || e) }));
    "#;
    let r = b
        .client
        .execute_async(script, vec![json!(port), json!(forged), json!(good)])
        .await
        .expect("the client script runs");
    assert_eq!(r["bad"], json!({ "state": "closed", "cause": null, "code": "unauthenticated" }), "{r:#}");
    assert_eq!(r["good"], json!({ "state": "open", "cause": null, "code": null }), "{r:#}");
    b.finish().await;
}
