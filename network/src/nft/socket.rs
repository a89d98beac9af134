//! The firewall's netlink socket: requests sent on it, their replies read and told
//! apart by sequence number, and the rule dump parsed back into rules.

use std::fmt;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkBuffer, NlasIterator, NLA_TYPE_MASK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    NfTablesMessage, RuleAttribute, RuleMessage, TableAttribute, TableMessage,
};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

use crate::error::{NetworkError, Result};

use super::{encode_into, ip, userdata_comment, Batch, ListedRule, NFNL_SUBSYS_NFTABLES};

/// How long to wait for the kernel's reply. The kernel handles a request while it is
/// being sent, so its replies are queued before `send` returns: this only bounds a bug.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default socket buffer size; larger batches raise the send buffer (`SO_SNDBUFFORCE`).
const DEFAULT_SNDBUF: usize = 64 * 1024;

/// The firewall's `NETLINK_NETFILTER` socket, opened on first use and kept: closing a
/// socket that committed changes makes the kernel wait for the ruleset's RCU grace period
/// (`NETLINK_URELEASE` flushes nf_tables' destroy work), ~10 ms on a loaded machine.
/// One request at a time; after any error the socket is dropped (replies it may still
/// hold can then never be mistaken for a later request's), and requests are told apart
/// by sequence number.
#[derive(Default)]
pub(crate) struct Netlink {
    socket: tokio::sync::Mutex<Option<TokioSocket>>,
    seq: std::sync::atomic::AtomicU32,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink").finish_non_exhaustive()
    }
}

impl Netlink {
    /// `count` consecutive sequence numbers, the first returned.
    fn seqs(&self, count: u32) -> u32 {
        self.seq.fetch_add(count, std::sync::atomic::Ordering::Relaxed).wrapping_add(1)
    }

    /// Runs `f` on the socket (opened if need be); drops the socket if `f` fails.
    async fn with_socket<T>(&self, f: impl AsyncFnOnce(&TokioSocket) -> Result<T>) -> Result<T> {
        let mut guard = self.socket.lock().await;
        if guard.is_none() {
            *guard = Some(open()?);
        }
        let result = f(guard.as_ref().expect("opened above")).await;
        if result.is_err() {
            *guard = None;
        }
        result
    }

    /// Sends `batch` and waits for the kernel's verdict. Nothing is changed unless
    /// everything is.
    pub(crate) async fn commit(&self, batch: &Batch<'_>) -> Result<()> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        let n = batch.ops.len() as u32;
        let base = self.seqs(n + 2);
        let buf = batch.encode(base)?;
        self.with_socket(async |socket| {
            if buf.len() > DEFAULT_SNDBUF {
                use std::os::fd::AsFd;
                nix::sys::socket::setsockopt(
                    &socket.socket_ref().as_fd(),
                    nix::sys::socket::sockopt::SndBufForce,
                    &(buf.len() * 2),
                )
                .map_err(|e| NetworkError::errno("raise the nftables socket's send buffer", e))?;
            }
            send(socket, &buf).await?;
            let mut acked = 0;
            while acked < n {
                for reply in receive(socket).await? {
                    let Reply::Error { seq, error } = reply else { continue };
                    let i = seq.wrapping_sub(base);
                    if i > n + 1 {
                        continue; // not this batch's
                    }
                    let Some(error) = error else {
                        acked += 1;
                        continue;
                    };
                    let what = match (i as usize).checked_sub(1).and_then(|i| batch.ops.get(i)) {
                        Some(op) => format!("{op} in table ip {}", batch.table),
                        None => format!("transaction on table ip {}", batch.table),
                    };
                    return Err(NetworkError::Firewall(format!("{what}: {error}")));
                }
            }
            Ok(())
        })
        .await
    }

    /// Whether the table (family `ip`) exists.
    pub(crate) async fn table_exists(&self, table: &str) -> Result<bool> {
        let seq = self.seqs(1);
        let mut buf = Vec::new();
        let get = NfTablesMessage::GetTable(TableMessage {
            attributes: vec![TableAttribute::Name(table.to_string())],
        });
        encode_into(&mut buf, ip(get), NLM_F_REQUEST, seq);
        self.with_socket(async |socket| {
            send(socket, &buf).await?;
            loop {
                for reply in receive(socket).await? {
                    match reply {
                        Reply::Table { seq: s } if s == seq => return Ok(true),
                        Reply::Error { seq: s, error: Some(e) } if s == seq => {
                            if e.raw_os_error() == Some(libc::ENOENT) {
                                return Ok(false);
                            }
                            return Err(NetworkError::Firewall(format!(
                                "get table ip {table}: {e}"
                            )));
                        }
                        _ => {}
                    }
                }
            }
        })
        .await
    }

    /// Every rule of the table (family `ip`) as (chain, handle, comment); empty if there
    /// is no such table. A dump the kernel marks as interrupted (the ruleset changed
    /// while it was read) is read again.
    pub(crate) async fn list_rules(&self, table: &str) -> Result<Vec<ListedRule>> {
        for _ in 0..10 {
            if let Some(rules) = self.dump_rules(table).await? {
                return Ok(rules);
            }
        }
        Err(NetworkError::Firewall(format!(
            "list table ip {table}: the ruleset kept changing while it was read"
        )))
    }

    /// One dump of the table's rules; `None` if the kernel marked it interrupted.
    async fn dump_rules(&self, table: &str) -> Result<Option<Vec<ListedRule>>> {
        let seq = self.seqs(1);
        let mut buf = Vec::new();
        let get = NfTablesMessage::GetRule(RuleMessage {
            attributes: vec![RuleAttribute::Table(table.to_string())],
        });
        encode_into(&mut buf, ip(get), NLM_F_REQUEST | NLM_F_DUMP, seq);
        self.with_socket(async |socket| {
            send(socket, &buf).await?;
            let mut rules = Vec::new();
            let mut interrupted = false;
            loop {
                for reply in receive(socket).await? {
                    match reply {
                        Reply::Done { seq: s, interrupted: i } if s == seq => {
                            return Ok((!(interrupted || i)).then_some(rules));
                        }
                        Reply::Error { seq: s, error: Some(e) } if s == seq => {
                            if e.raw_os_error() == Some(libc::ENOENT) {
                                return Ok(Some(Vec::new()));
                            }
                            return Err(NetworkError::Firewall(format!(
                                "list table ip {table}: {e}"
                            )));
                        }
                        Reply::Rule { seq: s, interrupted: i, table: t, rule } if s == seq => {
                            interrupted |= i;
                            if t == table {
                                rules.push(rule);
                            }
                        }
                        _ => {}
                    }
                }
            }
        })
        .await
    }
}

fn open() -> Result<TokioSocket> {
    let mut socket = TokioSocket::new(NETLINK_NETFILTER)
        .map_err(|e| NetworkError::io("open an nftables netlink socket", e))?;
    socket
        .socket_mut()
        .bind_auto()
        .map_err(|e| NetworkError::io("bind the nftables netlink socket", e))?;
    socket
        .socket_mut()
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| NetworkError::io("connect the nftables netlink socket", e))?;
    // Error replies carry only the failed message's header, not all of it.
    let _ = socket.socket_mut().set_cap_ack(true);
    Ok(socket)
}

async fn send(socket: &TokioSocket, buf: &[u8]) -> Result<()> {
    let sent =
        socket.send(buf).await.map_err(|e| NetworkError::io("send to nftables netlink", e))?;
    if sent != buf.len() {
        return Err(NetworkError::Firewall(format!("netlink sent {sent} of {} bytes", buf.len())));
    }
    Ok(())
}

/// Receive buffer. The kernel sizes a dump's datagrams by the largest read the socket
/// has seen (at most 32 KiB), so one large buffer gets many rules per datagram where
/// reads of exactly one message's size would get one each.
const RECV_BUF: usize = 64 * 1024;

/// The replies in the next datagram from the kernel.
async fn receive(socket: &TokioSocket) -> Result<Vec<Reply>> {
    let mut buf = Vec::with_capacity(RECV_BUF);
    tokio::time::timeout(REPLY_TIMEOUT, socket.recv_from(&mut buf))
        .await
        .map_err(|_| {
            NetworkError::Firewall(format!(
                "no reply from nftables netlink within {} s",
                REPLY_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| NetworkError::io("receive from nftables netlink", e))?;
    replies(&buf)
}

/// What berth reads of a reply.
#[derive(Debug)]
pub(crate) enum Reply {
    /// An acknowledgement (`error: None`) or an error.
    Error {
        seq: u32,
        error: Option<std::io::Error>,
    },
    /// The end of a dump.
    Done {
        seq: u32,
        interrupted: bool,
    },
    /// A table (the answer to `GETTABLE`).
    Table {
        seq: u32,
    },
    /// A rule of a dump, with the table it is in.
    Rule {
        seq: u32,
        interrupted: bool,
        table: String,
        rule: ListedRule,
    },
    Other,
}

pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
const NFT_MSG_NEWTABLE: u16 = NFNL_SUBSYS_NFTABLES << 8;
const NFT_MSG_NEWRULE: u16 = (NFNL_SUBSYS_NFTABLES << 8) | 6;

/// The replies in one datagram. Rules are read attribute by attribute (table, chain,
/// handle, userdata), never their expressions, so any rule anyone put in the table reads.
pub(crate) fn replies(mut buf: &[u8]) -> Result<Vec<Reply>> {
    let malformed =
        |what: &str| NetworkError::Firewall(format!("malformed nftables netlink reply: {what}"));
    let mut out = Vec::new();
    while !buf.is_empty() {
        let message = NetlinkBuffer::new_checked(buf).map_err(|e| malformed(&e.to_string()))?;
        let len = message.length() as usize;
        let (seq, kind) = (message.sequence_number(), message.message_type());
        let interrupted = message.flags() & NLM_F_DUMP_INTR != 0;
        let payload = message.payload();
        out.push(match kind {
            NLMSG_ERROR => {
                let code = payload.get(..4).ok_or_else(|| malformed("short error"))?;
                let code = i32::from_ne_bytes(code.try_into().expect("4 bytes"));
                let error = (code != 0).then(|| std::io::Error::from_raw_os_error(-code));
                Reply::Error { seq, error }
            }
            NLMSG_DONE => Reply::Done { seq, interrupted },
            NFT_MSG_NEWTABLE => Reply::Table { seq },
            NFT_MSG_NEWRULE => {
                let (mut table, mut chain, mut handle, mut comment) =
                    (String::new(), None, None, None);
                let attributes = payload.get(4..).ok_or_else(|| malformed("short rule"))?;
                for nla in NlasIterator::new(attributes) {
                    let nla = nla.map_err(|e| malformed(&e.to_string()))?;
                    let value = nla.value();
                    let text = || {
                        String::from_utf8_lossy(value.strip_suffix(&[0]).unwrap_or(value))
                            .into_owned()
                    };
                    match nla.kind() & NLA_TYPE_MASK {
                        NFTA_RULE_TABLE => table = text(),
                        NFTA_RULE_CHAIN => chain = Some(text()),
                        NFTA_RULE_HANDLE => {
                            handle = value.try_into().ok().map(u64::from_be_bytes);
                        }
                        NFTA_RULE_USERDATA => comment = userdata_comment(value),
                        _ => {}
                    }
                }
                match (chain, handle) {
                    (Some(chain), Some(handle)) => {
                        Reply::Rule { seq, interrupted, table, rule: (chain, handle, comment) }
                    }
                    _ => Reply::Other,
                }
            }
            _ => Reply::Other,
        });
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    Ok(out)
}

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_USERDATA: u16 = 7;
