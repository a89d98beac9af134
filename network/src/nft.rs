//! nftables over netlink: the few nf_tables messages [`crate::firewall`] needs, built with
//! `netlink-packet-netfilter` and sent on a `NETLINK_NETFILTER` socket.
//!
//! * All of it goes through one socket, kept open ([`Netlink`]).
//! * Changes go as one nfnetlink batch (`BATCH_BEGIN`, the messages, `BATCH_END`): the
//!   kernel applies all of it or, on any error, none of it. Every message asks for an
//!   acknowledgement; the batch succeeded when each one is acknowledged, and the first
//!   error names the message that failed.
//! * Reads are a `GETTABLE` for one table and a `GETRULE` dump of one table.
//!
//! Expressions are encoded as `nft` (1.0) encodes the same rule text, and a rule's comment
//! is its userdata in nft's format, so `nft list ruleset` shows berth's rules as if `nft`
//! had added them (checked against `nft` itself in `network/tests/pods.rs`).

use std::fmt;
use std::time::Duration;

use netlink_packet_core::{
    DefaultNla, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
    NLA_TYPE_MASK, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook, Immediate, InetHookNumber, ListAttribute, Meta, MetaKey, NfTablesMessage, Operator,
    Payload, Register, RuleAttribute, RuleMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

use crate::error::{NetworkError, Result};

/// `NFNL_SUBSYS_NFTABLES`: the `res_id` of a batch's begin and end messages.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NF_ACCEPT`, a base chain's policy.
const NF_ACCEPT: u32 = 1;
/// `NFTNL_UDATA_RULE_COMMENT`: the userdata TLV type nft stores a rule's comment under.
const UDATA_RULE_COMMENT: u8 = 0;
/// nft refuses longer comments (`NFTNL_UDATA_COMMENT_MAXLEN`); so does berth, so that
/// what `nft list ruleset` prints can be loaded again with `nft -f`.
pub(crate) const COMMENT_MAX: usize = 128;
/// How long to wait for the kernel's reply. The kernel handles a request while it is
/// being sent, so its replies are queued before `send` returns: this only bounds a bug.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default socket buffer size; larger batches raise the send buffer (`SO_SNDBUFFORCE`).
const DEFAULT_SNDBUF: usize = 64 * 1024;

// Expression attributes the crate has no types for (linux/netfilter/nf_tables.h).
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATUS: u32 = 2;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_FLAGS: u16 = 7;
const NFT_NAT_DNAT: u32 = 1;
const NFPROTO_IPV4: u32 = 2;
/// `NF_NAT_RANGE_PROTO_SPECIFIED` (linux/netfilter/nf_nat.h), as nft sets it for
/// `dnat to ADDR:PORT`.
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;

/// Where a payload expression reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    Network = 1,
    Transport = 2,
}

/// What a meta expression loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaLoad {
    /// The layer 4 protocol number (1 byte).
    L4Proto,
    /// The output interface's name (16 bytes, NUL padded).
    OifName,
}

/// One nf_tables expression, in the few forms berth's rules use. Loads go to register 1;
/// comparisons and bitwise operations work on register 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    /// `len` bytes at `offset` of a header.
    Payload {
        header: Header,
        offset: u32,
        len: u32,
    },
    Meta(MetaLoad),
    /// The conntrack status bits (u32, host byte order).
    CtStatus,
    /// The route type of the destination address (`fib daddr type`; u32, host order).
    FibDaddrType,
    /// register 1 = (register 1 & mask) ^ xor, over `mask.len()` bytes.
    Bitwise {
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Compare register 1 with `data`: equal (`eq`) or not equal.
    Cmp {
        eq: bool,
        data: Vec<u8>,
    },
    /// Load `data` into register `reg` (1 or 2).
    Immediate {
        reg: u8,
        data: Vec<u8>,
    },
    /// Destination NAT to the IPv4 address in register 1 and the port in register 2.
    Dnat,
    Masquerade,
}

fn u32_nla(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

impl Expr {
    fn to_netlink(&self) -> ListAttribute<ExpressionAttribute> {
        let other = |name: &str, attributes: Vec<DefaultNla>| Expressions::Other {
            expression_type: name.to_string(),
            attributes,
        };
        let expressions = match self {
            Expr::Payload { header, offset, len } => Expressions::Payload(vec![
                Payload::DestinationRegister(Register::Reg1),
                Payload::Base(*header as u32),
                Payload::Offset(*offset),
                Payload::Len(*len),
            ]),
            Expr::Meta(key) => Expressions::Meta(vec![
                Meta::Key(match key {
                    MetaLoad::L4Proto => MetaKey::L4Proto,
                    MetaLoad::OifName => MetaKey::Oifname,
                }),
                Meta::DestinationRegister(Register::Reg1),
            ]),
            Expr::CtStatus => {
                other("ct", vec![u32_nla(NFTA_CT_DREG, 1), u32_nla(NFTA_CT_KEY, NFT_CT_STATUS)])
            }
            Expr::FibDaddrType => other(
                "fib",
                vec![
                    u32_nla(NFTA_FIB_DREG, 1),
                    u32_nla(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE),
                    u32_nla(NFTA_FIB_FLAGS, NFTA_FIB_F_DADDR),
                ],
            ),
            Expr::Bitwise { mask, xor } => Expressions::Bitwise(vec![
                Bitwise::SourceRegister(Register::Reg1),
                Bitwise::DestinationRegister(Register::Reg1),
                Bitwise::Length(mask.len() as u32),
                Bitwise::Mask(DataAttribute::Value(mask.clone())),
                Bitwise::Xor(DataAttribute::Value(xor.clone())),
            ]),
            Expr::Cmp { eq, data } => Expressions::Cmp(vec![
                Cmp::SourceRegister(Register::Reg1),
                Cmp::Op(if *eq { Operator::Equal } else { Operator::NotEqual }),
                Cmp::Data(DataAttribute::Value(data.clone())),
            ]),
            Expr::Immediate { reg, data } => Expressions::Immediate(vec![
                Immediate::DestinationRegister(if *reg == 2 {
                    Register::Reg2
                } else {
                    Register::Reg1
                }),
                Immediate::Data(DataAttribute::Value(data.clone())),
            ]),
            Expr::Dnat => other(
                "nat",
                vec![
                    u32_nla(NFTA_NAT_TYPE, NFT_NAT_DNAT),
                    u32_nla(NFTA_NAT_FAMILY, NFPROTO_IPV4),
                    u32_nla(NFTA_NAT_REG_ADDR_MIN, 1),
                    u32_nla(NFTA_NAT_REG_PROTO_MIN, 2),
                    u32_nla(NFTA_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED),
                ],
            ),
            Expr::Masquerade => other("masq", Vec::new()),
        };
        expressions.into()
    }
}

/// A rule's comment as nft stores it in the rule's userdata: one TLV, type
/// `NFTNL_UDATA_RULE_COMMENT`, one length byte, the text and its NUL.
pub(crate) fn comment_userdata(comment: &str) -> Result<Vec<u8>> {
    if comment.len() > COMMENT_MAX || comment.contains('\0') {
        return Err(NetworkError::InvalidArgument(format!(
            "nftables comment {comment:?} is longer than {COMMENT_MAX} bytes or has a NUL"
        )));
    }
    let mut out = Vec::with_capacity(comment.len() + 3);
    out.push(UDATA_RULE_COMMENT);
    out.push(comment.len() as u8 + 1);
    out.extend_from_slice(comment.as_bytes());
    out.push(0);
    Ok(out)
}

/// The comment in a rule's userdata (nft's format), if any.
pub(crate) fn userdata_comment(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (kind, len) = (udata[0], usize::from(udata[1]));
        let value = udata.get(2..2 + len)?;
        if kind == UDATA_RULE_COMMENT {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        udata = &udata[2 + len..];
    }
    None
}

/// A hook of a `nat` base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NatHook {
    Prerouting,
    Output,
    Postrouting,
}

/// One change in a [`Batch`]; all of them apply to the batch's table (family `ip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// `add table`: creates the table, or leaves it as it is.
    AddTable,
    /// `add chain ... { type nat hook H priority P; policy accept; }`: creates the chain,
    /// or leaves it (and its rules) as it is.
    AddNatChain { name: &'static str, hook: NatHook, priority: i32 },
    /// `flush chain`: deletes every rule of the chain.
    FlushChain { chain: &'static str },
    /// `add rule ... comment "..."` (appended to the chain).
    AddRule { chain: &'static str, exprs: Vec<Expr>, comment: String },
    /// `delete rule ... handle H`.
    DeleteRule { chain: String, handle: u64 },
    /// `delete table` (with every chain and rule in it).
    DeleteTable,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddTable => write!(f, "add table"),
            Op::AddNatChain { name, .. } => write!(f, "add chain {name}"),
            Op::FlushChain { chain } => write!(f, "flush chain {chain}"),
            Op::AddRule { chain, comment, .. } => write!(f, "add rule {chain} ({comment})"),
            Op::DeleteRule { chain, handle } => write!(f, "delete rule {chain} handle {handle}"),
            Op::DeleteTable => write!(f, "delete table"),
        }
    }
}

/// One table's rule as listed: its chain, handle and comment.
pub(crate) type ListedRule = (String, u64, Option<String>);

/// Changes to one table (family `ip`), applied in one atomic transaction by
/// [`Batch::commit`].
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    table: &'a str,
    ops: Vec<Op>,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(table: &'a str) -> Self {
        Batch { table, ops: Vec::new() }
    }

    pub(crate) fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub(crate) fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The nf_tables message of `op` and the flags it needs besides request and ack.
    fn message(&self, op: &Op) -> Result<(NfTablesMessage, u16)> {
        let table = self.table.to_string();
        Ok(match op {
            Op::AddTable => (
                NfTablesMessage::NewTable(TableMessage {
                    attributes: vec![TableAttribute::Name(table)],
                }),
                NLM_F_CREATE,
            ),
            Op::AddNatChain { name, hook, priority } => {
                let hook = match hook {
                    NatHook::Prerouting => InetHookNumber::PreRouting,
                    NatHook::Output => InetHookNumber::LocalOut,
                    NatHook::Postrouting => InetHookNumber::PostRouting,
                };
                (
                    NfTablesMessage::NewChain(ChainMessage {
                        attributes: vec![
                            ChainAttribute::Table(table),
                            ChainAttribute::Name(name.to_string()),
                            ChainAttribute::Hook(vec![
                                Hook::Number(hook.into()),
                                Hook::Priority(*priority as u32),
                            ]),
                            ChainAttribute::Policy(NF_ACCEPT),
                            ChainAttribute::Type("nat".to_string()),
                        ],
                    }),
                    NLM_F_CREATE,
                )
            }
            Op::FlushChain { chain } => (
                NfTablesMessage::DeleteRule(RuleMessage {
                    attributes: vec![
                        RuleAttribute::Table(table),
                        RuleAttribute::Chain(chain.to_string()),
                    ],
                }),
                0,
            ),
            Op::AddRule { chain, exprs, comment } => (
                NfTablesMessage::NewRule(RuleMessage {
                    attributes: vec![
                        RuleAttribute::Table(table),
                        RuleAttribute::Chain(chain.to_string()),
                        RuleAttribute::Expressions(exprs.iter().map(Expr::to_netlink).collect()),
                        RuleAttribute::UserData(comment_userdata(comment)?),
                    ],
                }),
                NLM_F_CREATE | NLM_F_APPEND,
            ),
            Op::DeleteRule { chain, handle } => (
                NfTablesMessage::DeleteRule(RuleMessage {
                    attributes: vec![
                        RuleAttribute::Table(table),
                        RuleAttribute::Chain(chain.clone()),
                        RuleAttribute::Handle(*handle),
                    ],
                }),
                0,
            ),
            Op::DeleteTable => (
                NfTablesMessage::DeleteTable(TableMessage {
                    attributes: vec![TableAttribute::Name(table)],
                }),
                0,
            ),
        })
    }

    /// The batch as sent: begin (sequence number `base`), one message per op (`base` +
    /// 1..=n, each asking for an ack), end (`base` + n + 1).
    pub(crate) fn encode(&self, base: u32) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let control = |m: ControlMessage| {
            NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
                m,
            )
        };
        encode_into(&mut buf, control(ControlMessage::BatchBegin), NLM_F_REQUEST, base);
        for (i, op) in self.ops.iter().enumerate() {
            let (message, flags) = self.message(op)?;
            let seq = base.wrapping_add(i as u32 + 1);
            encode_into(&mut buf, ip(message), NLM_F_REQUEST | NLM_F_ACK | flags, seq);
        }
        let end = base.wrapping_add(self.ops.len() as u32 + 1);
        encode_into(&mut buf, control(ControlMessage::BatchEnd), NLM_F_REQUEST, end);
        Ok(buf)
    }
}

/// An nf_tables message of family `ip`.
fn ip(message: NfTablesMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0), message)
}

fn encode_into(buf: &mut Vec<u8>, message: NetfilterMessage, flags: u16, seq: u32) {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    message.finalize();
    let start = buf.len();
    buf.resize(start + message.buffer_len(), 0);
    message.serialize(&mut buf[start..]);
}

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

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_use_nfts_userdata_format() {
        // As `nft --debug=netlink` shows it for `comment "berth:egress"`.
        assert_eq!(comment_userdata("berth:egress").unwrap(), b"\x00\x0dberth:egress\x00");
        assert_eq!(userdata_comment(b"\x00\x0dberth:egress\x00").as_deref(), Some("berth:egress"));
        // Another TLV first, and truncated or comment-less data.
        assert_eq!(userdata_comment(b"\x01\x01x\x00\x02ab").as_deref(), Some("ab"));
        assert_eq!(userdata_comment(b"\x00\x09short"), None);
        assert_eq!(userdata_comment(b"\x01\x01x"), None);
        assert_eq!(userdata_comment(b""), None);
        assert!(comment_userdata(&"x".repeat(COMMENT_MAX)).is_ok());
        assert!(comment_userdata(&"x".repeat(COMMENT_MAX + 1)).is_err());
        assert!(comment_userdata("a\0b").is_err());
    }

    /// Every message of `buf`, decoded by the crate (what the kernel would read).
    fn decode_all(mut buf: &[u8]) -> Vec<NetlinkMessage<NetfilterMessage>> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let len = u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
            out.push(NetlinkMessage::deserialize(&buf[..len]).unwrap());
            buf = &buf[len..];
        }
        out
    }

    #[test]
    fn batches_frame_their_messages() {
        let mut batch = Batch::new("bt");
        batch.push(Op::AddTable);
        batch.push(Op::DeleteRule { chain: "output".into(), handle: 7 });
        let buf = batch.encode(100).unwrap();
        let messages = decode_all(&buf);
        assert_eq!(messages.len(), 4);
        let seqs: Vec<u32> = messages.iter().map(|m| m.header.sequence_number).collect();
        assert_eq!(seqs, [100, 101, 102, 103]);
        // Begin and end: subsystem 0, types 16 and 17, res_id NFNL_SUBSYS_NFTABLES.
        assert_eq!(messages[0].header.message_type, 16);
        assert_eq!(messages[3].header.message_type, 17);
        assert_eq!(&buf[16..20], &[0, 0, 0, 10]);
        // nf_tables messages: subsystem 10, family ip, request + ack.
        assert_eq!(messages[1].header.message_type, 10 << 8); // NEWTABLE (0)
        assert_eq!(messages[2].header.message_type, (10 << 8) | 8); // DELRULE
        assert_eq!(messages[1].header.flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(messages[2].header.flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(buf[20 + 16], 2); // nfgen_family AF_INET
        let NetlinkPayload::InnerMessage(message) = &messages[2].payload else {
            panic!("{:?}", messages[2]);
        };
        let mut want = Vec::new();
        encode_into(
            &mut want,
            ip(NfTablesMessage::DeleteRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table("bt".into()),
                    RuleAttribute::Chain("output".into()),
                    RuleAttribute::Handle(7),
                ],
            })),
            NLM_F_REQUEST | NLM_F_ACK,
            102,
        );
        assert_eq!(decode_all(&want)[0].payload, NetlinkPayload::InnerMessage(message.clone()));
    }

    #[test]
    fn replies_carry_rules_acks_errors_and_the_end() {
        let rule = RuleMessage {
            attributes: vec![
                RuleAttribute::Table("bt".into()),
                RuleAttribute::Chain("prerouting".into()),
                RuleAttribute::Handle(42),
                RuleAttribute::Expressions(vec![
                    Expr::FibDaddrType.to_netlink(),
                    Expr::Masquerade.to_netlink(),
                ]),
                RuleAttribute::UserData(comment_userdata("berth:pod=a|tcp/0.0.0.0:80").unwrap()),
            ],
        };
        let mut buf = Vec::new();
        encode_into(&mut buf, ip(NfTablesMessage::NewRule(rule)), NLM_F_DUMP_INTR, 5);
        // An ack, an error (ENOENT) and the end of a dump, as the kernel frames them.
        for (kind, seq, code) in
            [(NLMSG_ERROR, 6u32, 0i32), (NLMSG_ERROR, 7, -2), (NLMSG_DONE, 5, 0)]
        {
            buf.extend_from_slice(&20u32.to_ne_bytes());
            buf.extend_from_slice(&kind.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&code.to_ne_bytes());
        }
        let got = replies(&buf).unwrap();
        assert_eq!(got.len(), 4, "{got:?}");
        let Reply::Rule { seq: 5, interrupted: true, table, rule } = &got[0] else {
            panic!("{got:?}");
        };
        assert_eq!(table, "bt");
        assert_eq!(
            rule,
            &("prerouting".to_string(), 42, Some("berth:pod=a|tcp/0.0.0.0:80".to_string()))
        );
        assert!(matches!(got[1], Reply::Error { seq: 6, error: None }), "{got:?}");
        let Reply::Error { seq: 7, error: Some(e) } = &got[2] else { panic!("{got:?}") };
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        assert!(matches!(got[3], Reply::Done { seq: 5, interrupted: false }), "{got:?}");
        assert!(replies(&buf[..10]).is_err());
    }
}
