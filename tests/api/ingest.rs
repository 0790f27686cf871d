//! `TaskService.StreamReports`, the ingest stream: answers in order with the
//! stored seq, per-report refusals that leave the stream open, and the unary
//! calls' authorisation and tenancy.

use std::time::Duration;

use herald::domain::Role;
use herald::proto::{self as pb, stream_reports_request::Report};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::{Backend, TestApp, next};
use crate::on_both_backends;
use crate::tasks::{create, progress};

on_both_backends!(stream_answers_every_report_in_order_with_its_stored_seq);

type Answers = tonic::Streaming<pb::StreamReportsResponse>;

/// Opens a stream; reports go in through the sender.
async fn open(
    tasks: &mut pb::task_service_client::TaskServiceClient<crate::helpers::Authed>,
) -> Result<(mpsc::Sender<pb::StreamReportsRequest>, Answers), tonic::Status> {
    let (tx, rx) = mpsc::channel(1024);
    let answers = tasks.stream_reports(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, answers))
}

fn report(r: Report) -> pb::StreamReportsRequest {
    pb::StreamReportsRequest { report: Some(r) }
}

async fn stream_answers_every_report_in_order_with_its_stored_seq(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut tasks = app.tasks(&app.admin());
    let id = tasks.create_task(create("ingest")).await.unwrap().into_inner().id;
    let (tx, mut answers) = open(&mut tasks).await.unwrap();
    // 200 reports sent without waiting, three of them refused on the way.
    let mut refused = std::collections::HashMap::new();
    for i in 0..200u64 {
        let mut p = progress(&id, (i / 2) as u32);
        p.message = format!("report {i}");
        let r = match i {
            50 => {
                refused.insert(i, Code::NotFound);
                Report::Progress(progress("no-such-task", 1))
            }
            100 => {
                refused.insert(i, Code::InvalidArgument);
                Report::Progress(progress(&id, 101))
            }
            150 => {
                refused.insert(i, Code::NotFound);
                let event = pb::report_event_request::Event::Thinking(pb::Thinking { text: "hm".into() });
                Report::Event(pb::ReportEventRequest {
                    execution_id: "no-such-execution".into(),
                    event: Some(event),
                })
            }
            _ => Report::Progress(p),
        };
        tx.send(report(r)).await.unwrap();
    }
    let mut seqs = Vec::new();
    for i in 0..200u64 {
        let a = next(&mut answers).await;
        assert_eq!(a.index, i, "answers come in the order sent");
        match refused.get(&i) {
            Some(code) => {
                let e = a.error.unwrap_or_else(|| panic!("report {i} is refused"));
                assert_eq!(e.code, *code as i32, "report {i}: {}", e.message);
                assert!(!e.message.is_empty());
                assert_eq!(a.seq, 0);
            }
            None => {
                assert!(a.error.is_none(), "report {i}: {:?}", a.error);
                seqs.push(a.seq);
            }
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs rise in the order sent: {seqs:?}");
    // A report without a body is refused alone too; the stream stays open.
    tx.send(pb::StreamReportsRequest { report: None }).await.unwrap();
    let a = next(&mut answers).await;
    assert_eq!((a.index, a.error.map(|e| e.code)), (200, Some(Code::InvalidArgument as i32)));

    // Every acknowledged report is stored, with the seq it was answered with.
    let history = tasks.list_task_progress(pb::ListTaskProgressRequest { id: id.clone() }).await.unwrap();
    let stored: Vec<(u64, String)> =
        history.into_inner().entries.into_iter().map(|e| (e.seq, e.message)).collect();
    let want: Vec<(u64, String)> = (0..200u64)
        .filter(|i| !refused.contains_key(i))
        .zip(&seqs)
        .map(|(i, seq)| (*seq, format!("report {i}")))
        .collect();
    assert_eq!(stored, want);
    let task = tasks.get_task(pb::GetTaskRequest { id }).await.unwrap().into_inner();
    assert_eq!(
        (task.progress, task.message.as_str(), task.last_seq),
        (99, "report 199", *seqs.last().unwrap())
    );

    // Closing the sending side ends the stream cleanly once all is answered.
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), answers.next()).await.expect("the stream ends");
    assert!(end.is_none(), "{end:?}");
    app.stop().await;
}

/// A token without the write permission cannot open the stream; another
/// tenant's task is not found, as for ReportProgress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_keeps_the_unary_calls_permissions_and_tenancy() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let acme = app.token("acme-agent", &[Role::Agent], Some("acme"));
    let mut acme_tasks = app.tasks(&acme);
    let id = acme_tasks.create_task(create("acme's")).await.unwrap().into_inner().id;

    let viewer = app.token("v", &[Role::Viewer], Some("acme"));
    let Err(err) = open(&mut app.tasks(&viewer)).await else { panic!("a viewer cannot report") };
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let other = app.token("other-agent", &[Role::Agent], Some("globex"));
    let (tx, mut answers) = open(&mut app.tasks(&other)).await.unwrap();
    tx.send(report(Report::Progress(progress(&id, 10)))).await.unwrap();
    let a = next(&mut answers).await;
    assert_eq!(a.error.map(|e| e.code), Some(Code::NotFound as i32), "another tenant's task is not found");
    let task = acme_tasks.get_task(pb::GetTaskRequest { id }).await.unwrap().into_inner();
    assert_eq!(task.progress, 0, "nothing was stored");
    app.stop().await;
}

/// A stream past its token's expiry ends with UNAUTHENTICATED after the
/// answers to what was sent before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ends_when_its_token_expires() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut tasks = app.tasks(&app.admin());
    let id = tasks.create_task(create("short")).await.unwrap().into_inner().id;
    let short = herald::auth::Minter::hs256(crate::helpers::SECRET.as_bytes())
        .mint("exec", &[Role::Agent], None, Duration::from_secs(2))
        .unwrap();
    let (tx, mut answers) = open(&mut app.tasks(&short)).await.unwrap();
    tx.send(report(Report::Progress(progress(&id, 10)))).await.unwrap();
    let a = next(&mut answers).await;
    assert!(a.error.is_none() && a.seq > 0, "{a:?}");
    let end = tokio::time::timeout(Duration::from_secs(10), answers.next()).await.expect("the stream ends");
    let status = end.expect("an end status").expect_err("an error status");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    app.stop().await;
}

/// Execution events on the stream need the executor session holding the
/// execution, named when the stream opens (`x-herald-session`), as for
/// ReportEvent: another session of the same token is refused per report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_execution_events_need_the_holding_session() {
    use pb::report_event_request::Event as Ev;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let alice = app.token("alice", &[Role::Agent], Some("acme"));
    let (id, _commands, holder) = crate::security::running_execution(&app, &alice).await;
    #[allow(clippy::needless_update)]
    let attach = pb::AttachRequest { agent_id: "writer".into(), ..Default::default() };
    let other = app.executors(&alice).attach(attach).await.unwrap();
    let (other, _other_commands) = (crate::helpers::session_of(&other), other.into_inner());
    let thinking = |text: &str| {
        let event = Ev::Thinking(pb::Thinking { text: text.into() });
        report(Report::Event(pb::ReportEventRequest { execution_id: id.clone(), event: Some(event) }))
    };
    let mut seqs = Vec::new();
    for (session, ok) in [(Some(&other), false), (None, false), (Some(&holder), true)] {
        let (tx, rx) = mpsc::channel(4);
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        if let Some(s) = session {
            req.metadata_mut().insert("x-herald-session", s.parse().unwrap());
        }
        let mut answers = app.tasks(&alice).stream_reports(req).await.unwrap().into_inner();
        tx.send(thinking("step one")).await.unwrap();
        let a = next(&mut answers).await;
        if ok {
            assert!(a.error.is_none() && a.seq > 0, "{a:?}");
            seqs.push(a.seq);
        } else {
            assert_eq!(a.error.map(|e| e.code), Some(Code::PermissionDenied as i32), "{session:?}");
        }
    }
    let execution =
        app.executions(&alice).get_execution(pb::GetExecutionRequest { id }).await.unwrap().into_inner();
    assert_eq!(execution.last_seq, seqs[0], "only the holding session's event was stored");
    app.stop().await;
}
