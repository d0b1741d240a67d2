//! A real SMTP listener on loopback for the tests: it speaks enough of RFC 5321 (EHLO/HELO, MAIL,
//! RCPT, DATA, RSET, NOOP, QUIT) for lettre to deliver to it, keeps every message it accepted,
//! and can be told to refuse mail (a temporary 451) to exercise retries.

use base64::Engine;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message the listener accepted.
#[derive(Clone, Debug)]
pub(crate) struct ReceivedMail {
    /// The envelope's recipients.
    pub(crate) to: Vec<String>,
    /// The message's subject.
    pub(crate) subject: String,
    /// The body, decoded from its transfer encoding.
    pub(crate) body: String,
    /// The `Message-ID` header.
    pub(crate) message_id: String,
}

impl ReceivedMail {
    /// The sign-in token in the message's link.
    pub(crate) fn sign_in_token(&self) -> String {
        let start = self.body.find("token=ml1_").expect("a sign-in link") + "token=".len();
        self.body[start..start + 4 + 52].to_owned()
    }

    /// The 6-digit code of a recovery job's message.
    pub(crate) fn recovery_code(&self) -> String {
        let marker = "Your code: ";
        let start = self.body.find(marker).expect("a recovery code") + marker.len();
        self.body[start..start + 6].to_owned()
    }

    /// The 6-digit code in the message.
    pub(crate) fn sign_in_code(&self) -> String {
        let marker = "sign-in page: ";
        let start = self.body.find(marker).expect("a sign-in code") + marker.len();
        self.body[start..start + 6].to_owned()
    }
}

#[derive(Default)]
struct Inner {
    messages: Mutex<Vec<ReceivedMail>>,
    refuse: AtomicBool,
}

/// The running listener.
pub(crate) struct FakeSmtp {
    address: std::net::SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeSmtp {
    /// Starts listening on a free loopback port.
    pub(crate) async fn start() -> FakeSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().unwrap();
        let inner = Arc::new(Inner::default());
        let shared = Arc::clone(&inner);
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(converse(stream, Arc::clone(&shared)));
            }
        });
        FakeSmtp {
            address,
            inner,
            server,
        }
    }

    /// The URL the service is configured with.
    pub(crate) fn url(&self) -> String {
        format!("smtp://{}", self.address)
    }

    /// Makes the listener refuse (451) or accept mail from now on.
    pub(crate) fn refuse_mail(&self, refuse: bool) {
        self.inner.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Every message accepted so far.
    pub(crate) fn messages(&self) -> Vec<ReceivedMail> {
        self.inner.messages.lock().unwrap().clone()
    }

    /// The messages accepted for `email`.
    pub(crate) fn messages_to(&self, email: &str) -> Vec<ReceivedMail> {
        self.messages()
            .into_iter()
            .filter(|m| m.to.iter().any(|to| to == email))
            .collect()
    }

    /// Waits (at most 15 s) until `count` messages to `email` have arrived; returns them.
    pub(crate) async fn wait_for(&self, email: &str, count: usize) -> Vec<ReceivedMail> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let messages = self.messages_to(email);
            if messages.len() >= count {
                return messages;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{count} message(s) to {email} did not arrive; got {}",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops listening.
    pub(crate) fn stop(&self) {
        self.server.abort();
    }
}

async fn converse(stream: TcpStream, inner: Arc<Inner>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    if write.write_all(b"220 fake-smtp ESMTP\r\n").await.is_err() {
        return;
    }
    let mut recipients = Vec::new();
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        let answer: &str = match verb.as_str() {
            "EHLO" => "250-fake-smtp\r\n250 8BITMIME",
            "HELO" => "250 fake-smtp",
            "MAIL" if inner.refuse.load(Ordering::SeqCst) => "451 4.3.0 try again later",
            "MAIL" => {
                recipients.clear();
                "250 2.1.0 OK"
            }
            "RCPT" => {
                let address = line
                    .split('<')
                    .nth(1)
                    .and_then(|rest| rest.split('>').next())
                    .unwrap_or_default();
                recipients.push(address.to_owned());
                "250 2.1.5 OK"
            }
            "DATA" => {
                if write.write_all(b"354 go ahead\r\n").await.is_err() {
                    return;
                }
                let Some(data) = read_data(&mut lines).await else {
                    return;
                };
                inner
                    .messages
                    .lock()
                    .unwrap()
                    .push(parse(std::mem::take(&mut recipients), &data));
                "250 2.0.0 queued"
            }
            "RSET" | "NOOP" => "250 2.0.0 OK",
            "QUIT" => {
                let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                return;
            }
            _ => "500 5.5.2 unknown command",
        };
        if write
            .write_all(format!("{answer}\r\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Reads a DATA section up to the lone dot, undoing dot-stuffing.
async fn read_data(lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<String> {
    let mut data = String::new();
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line == ".\r\n" || line == ".\n" {
            return Some(data);
        }
        data.push_str(line.strip_prefix('.').unwrap_or(&line));
    }
}

fn parse(to: Vec<String>, data: &str) -> ReceivedMail {
    let (head, body) = data.split_once("\r\n\r\n").unwrap_or((data, ""));
    let header = |name: &str| {
        head.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let body = match header("Content-Transfer-Encoding")
        .to_ascii_lowercase()
        .as_str()
    {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(body.split_whitespace().collect::<String>())
                .expect("base64 body"),
        )
        .expect("a UTF-8 body"),
        _ => body.to_owned(),
    };
    ReceivedMail {
        to,
        subject: header("Subject"),
        body,
        message_id: header("Message-ID"),
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let mut out = Vec::new();
    let bytes = text.replace("=\r\n", "").into_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 3 <= bytes.len() {
            if let Ok(byte) =
                u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""), 16)
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("a UTF-8 body")
}
