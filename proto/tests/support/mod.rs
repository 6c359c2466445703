//! What the integration tests share: a tonic server on an ephemeral port.

use std::net::SocketAddr;

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::server::{Router, TcpIncoming};

/// A server running on an ephemeral port until `stop` is called.
pub struct Running {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    pub async fn start(router: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(router.serve_with_incoming_shutdown(
            TcpIncoming::from(listener),
            async {
                let _ = signal.await;
            },
        ));
        Self {
            addr,
            shutdown,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        self.task
            .await
            .expect("server task")
            .expect("server ends cleanly");
    }
}
