//! A loopback TCP proxy a test can cut and restore: the service reaches its database through it,
//! so a test can take the database away from one service without touching the shared cluster.
//! Cut, it closes every proxied connection and closes each new one on arrival, as a database
//! that went down would look to its clients; restored, it proxies again.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy to one target address.
pub(crate) struct TcpProxy {
    pub(crate) address: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy on a free loopback port to `target`.
    pub(crate) async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let (cut, is_cut) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if *is_cut.borrow() {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(proxy(inbound, target, is_cut.clone()));
            }
        });
        TcpProxy { address, cut, task }
    }

    /// Takes the target away: open connections close, new ones are closed on arrival.
    pub(crate) fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Brings the target back.
    pub(crate) fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(mut inbound: TcpStream, target: SocketAddr, mut is_cut: watch::Receiver<bool>) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = is_cut.wait_for(|cut| *cut) => {}
    }
}
