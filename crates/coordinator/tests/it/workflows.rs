//! Workflow runs at the coordinator: queueing, claiming in order, the
//! rules on progress and outcomes, the lease on silent workers, and the
//! audit trail. (Who may call what is in `authz.rs`; the whole path with a
//! worker is in `crates/local/tests/it/e2e.rs`.)

use crate::common;

use crate::common::{Auth, Harness};
use axum::http::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_claimed_in_order_and_their_outcomes_checked() {
    let h = Harness::new();
    let (_, _, mel) = h.setup_users().await;
    let worker = Auth::Cert(h.app_cert("worker").await);
    let other = Auth::Cert(h.app_cert("other").await);

    // Unknown workflows and nothing queued.
    let (s, v) = h
        .call(Method::POST, "/v1/workflows/nope/runs", &mel, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = h.call(Method::POST, "/v1/jobs/claim", &worker, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.get("job").is_none(), "{v}");

    // Two runs; claims take the oldest first, each once; another app gets
    // none of them.
    for _ in 0..2 {
        let (s, v) = h
            .call(Method::POST, "/v1/workflows/w1/runs", &mel, None)
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["state"], "queued");
    }
    let (_, v) = h.call(Method::POST, "/v1/jobs/claim", &other, None).await;
    assert!(v.get("job").is_none(), "{v}");
    let (_, v) = h.call(Method::POST, "/v1/jobs/claim", &worker, None).await;
    let job = &v["job"];
    assert_eq!(job["run"], 1);
    assert_eq!(job["input"]["location"], "datasets/d1.sealed");
    assert_eq!(job["output"]["location"], "results/w1/run-1.sealed");
    assert_eq!(job["output"]["context"]["run"], "1");
    let (_, v) = h.call(Method::POST, "/v1/jobs/claim", &worker, None).await;
    assert_eq!(v["job"]["run"], 2);
    let (_, v) = h.call(Method::POST, "/v1/jobs/claim", &worker, None).await;
    assert!(v.get("job").is_none(), "{v}");

    // Progress, then malformed and premature outcomes are refused.
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/jobs/1/progress",
            &worker,
            Some(json!({"done": 3, "total": 10})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["done"].as_u64(), v["total"].as_u64()),
        (Some(3), Some(10))
    );
    for (path, body) in [
        ("/v1/jobs/1/finish", json!({"done": 10})),
        (
            "/v1/jobs/1/finish",
            json!({"done": 10, "output_sha256": "zz", "receipt": null}),
        ),
        ("/v1/jobs/one/finish", json!({"done": 1, "error": "x"})),
        ("/v1/jobs/1/progress", json!({"done": -1, "total": 1})),
        (
            "/v1/jobs/1/progress",
            json!({"done": 1, "total": 1, "x": 1}),
        ),
    ] {
        let (s, v) = h.call(Method::POST, path, &worker, Some(body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(v["type"], "bad_request");
    }
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/jobs/9/progress",
            &worker,
            Some(json!({"done": 1, "total": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A failure is recorded once; the run cannot be finished again.
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/jobs/1/finish",
            &worker,
            Some(json!({"done": 3, "error": "the input does not open"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "failed");
    assert_eq!(v["error"], "the input does not open");
    assert!(v.get("output").is_none());
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/jobs/1/finish",
            &worker,
            Some(json!({"done": 3, "error": "again"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/jobs/1/progress",
            &worker,
            Some(json!({"done": 4, "total": 10})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // A worker that stops reporting loses its run at the next claim.
    h.state
        .store()
        .write(|c| {
            c.execute(
                "UPDATE workflow_runs SET updated_unix = 0 WHERE id = 2",
                &[],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let (_, v) = h.call(Method::POST, "/v1/jobs/claim", &worker, None).await;
    assert!(v.get("job").is_none(), "{v}");
    let (_, v) = h.call(Method::GET, "/v1/runs/2", &mel, None).await;
    assert_eq!(v["state"], "failed");
    assert!(v["error"].as_str().unwrap().contains("stopped reporting"));

    // Every queue, claim and end is in the audit log.
    let kinds = h.audit_kinds().await;
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(count("workflow_run_queued"), 2);
    assert_eq!(count("workflow_run_claimed"), 2);
    assert_eq!(count("workflow_run_finished"), 2);
    let (_, v) = h.call(Method::GET, "/v1/runs", &mel, None).await;
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);
    assert_eq!(v["runs"][0]["id"], 2, "newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_workflows_queue_with_their_options() {
    let h = Harness::new();
    let (_, _, mel) = h.setup_users().await;
    let apply = |m: String| {
        let h = &h;
        async move {
            h.call(
                Method::PUT,
                "/v1/manifest",
                &h.admin(),
                Some(json!({"manifest": m})),
            )
            .await
        }
    };
    // Bad training manifests are refused whole.
    for (kind, table, why) in [
        (true, "loss = \"hinge\"\n", "loss"),
        (true, "epochs = 0\n", "epochs"),
        (true, "batch = 3\n", "unknown field"),
        (false, "epochs = 2\n", "only"),
    ] {
        let (s, v) = apply(training_manifest(kind, table)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{table}: {v}");
        assert!(v["detail"].as_str().unwrap().contains(why), "{why}: {v}");
    }
    let m = training_manifest(true, "epochs = 3\n");
    let (s, v) = apply(m).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = h
        .call(Method::POST, "/v1/workflows/w1/runs", &mel, None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["kind"], "train");
    assert_eq!(v["state"], "queued");

    // The job carries the options (the rest at `twinseal train`'s
    // defaults), the model's and the metrics' places.
    let worker = Auth::Cert(h.app_cert("worker").await);
    let (_, v) = h.call(Method::POST, "/v1/jobs/claim", &worker, None).await;
    let job = &v["job"];
    assert_eq!(job["train"]["epochs"], 3);
    assert_eq!(job["train"]["batch_size"], 128);
    assert_eq!(job["train"]["loss"], "contrastive");
    assert_eq!(job["output"]["location"], "results/w1/run-1/model.sealed");
    assert_eq!(job["output"]["context"]["purpose"], "model");
    assert_eq!(
        job["metrics"]["location"],
        "results/w1/run-1/metrics.sealed"
    );

    // Training progress is kept and shown to readers.
    let progress = json!({"done": 1, "total": 3, "training": {
        "stage": "training", "epoch": 1, "epochs": 3, "loss": 0.25, "accuracy": 0.9}});
    let (s, v) = h
        .call(Method::POST, "/v1/jobs/1/progress", &worker, Some(progress))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = h.call(Method::GET, "/v1/runs/1", &mel, None).await;
    assert_eq!(v["training"]["epoch"], 1);
    assert_eq!(v["training"]["loss"], 0.25);

    // A success without the training report, or with malformed digests,
    // is refused; nothing is recorded.
    let receipt = json!({"format": "x", "operation": "workflow", "time": "t", "inputs_sha256": "00",
        "model_sha256": "00", "evidence_sha256": "00", "certificate_sha256": "00",
        "output": "{}", "signature": "AA=="});
    let d = "ab".repeat(32);
    let training = |model: &str| {
        json!({"model_sha256": model, "model_header_sha256": d,
        "model_plain_sha256": d, "metrics_output": "results/w1/run-1/metrics.sealed",
        "metrics_sha256": d, "dataset_sha256": d, "sealed_dataset_sha256": d,
        "dataset_index_sha256": d, "images": [1, 1, 2], "metrics": {"accuracy": 0.9}})
    };
    for (body, why) in [
        (
            json!({"done": 3, "output_sha256": d, "receipt": receipt}),
            "reports what it trained",
        ),
        (
            json!({"done": 3, "output_sha256": d, "receipt": receipt, "training": training("zz")}),
            "64 hex digits",
        ),
        (
            json!({"done": 3, "output_sha256": "cd".repeat(32), "receipt": receipt, "training": training(&d)}),
            "the sealed model's digest",
        ),
    ] {
        let (s, v) = h
            .call(Method::POST, "/v1/jobs/1/finish", &worker, Some(body))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["detail"].as_str().unwrap().contains(why), "{why}: {v}");
    }
    let (_, v) = h.call(Method::GET, "/v1/runs/1", &mel, None).await;
    assert_eq!(v["state"], "running");
    assert!(v.get("training_record").is_none(), "{v}");
}

/// The test manifest with workflow w1 of kind `train` (or not) and a
/// `[workflows.w1.train]` table holding `table`.
fn training_manifest(train: bool, table: &str) -> String {
    let m = if train {
        common::manifest().replace("[workflows.w1]\n", "[workflows.w1]\nkind = \"train\"\n")
    } else {
        common::manifest()
    };
    format!("{m}\n[workflows.w1.train]\n{table}")
}
