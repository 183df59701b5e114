//! `cdnsign health`: one gRPC health check (`grpc.health.v1.Health/Check`) against a
//! running server, for a Docker `HEALTHCHECK` or a script. Exit 0 when the service reports
//! SERVING; 1 when it reports anything else or cannot be reached in time.

use std::process::ExitCode;
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Checks `service` ("" for the whole server) at `addr` (`HOST:PORT`, plaintext) within
/// `timeout`; prints the status on stdout (or the reason on stderr).
pub fn check(addr: &str, service: &str, timeout: Duration) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cdnsign health: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let uri = format!("http://{addr}");
    let result = runtime.block_on(async {
        let endpoint = tonic::transport::Endpoint::from_shared(uri.clone())
            .map_err(|e| format!("bad --addr {addr:?}: {e}"))?
            .connect_timeout(timeout)
            .timeout(timeout);
        let channel = tokio::time::timeout(timeout, endpoint.connect())
            .await
            .map_err(|_| format!("{addr}: no connection within {timeout:?}"))?
            .map_err(|e| format!("{addr}: cannot connect: {e}"))?;
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: service.to_owned(),
        });
        req.set_timeout(timeout);
        HealthClient::new(channel)
            .check(req)
            .await
            .map(|r| r.into_inner().status())
            .map_err(|s| format!("{addr}: {}: {}", s.code(), s.message()))
    });
    match result {
        Ok(ServingStatus::Serving) => {
            println!("SERVING");
            ExitCode::SUCCESS
        }
        Ok(other) => {
            println!("{}", other.as_str_name());
            ExitCode::FAILURE
        }
        Err(why) => {
            eprintln!("cdnsign health: {why}");
            ExitCode::FAILURE
        }
    }
}
