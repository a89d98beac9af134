//! nftables over netlink: the few nf_tables messages [`crate::firewall`] needs, built with
//! `netlink-packet-netfilter` and sent on a `NETLINK_NETFILTER` socket of each call's own
//! (so one call never reads another's replies).
//!
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
    DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND,
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook, Immediate, InetHookNumber, ListAttribute, Meta, MetaKey, NfTablesMessage, Operator,
    Payload, Register, RuleAttribute, RuleMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
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

    /// The batch as sent: begin (sequence number 0), one message per op (1..=n, each
    /// asking for an ack), end (n + 1).
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let control = |m: ControlMessage| {
            NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
                m,
            )
        };
        encode_into(&mut buf, control(ControlMessage::BatchBegin), NLM_F_REQUEST, 0);
        for (i, op) in self.ops.iter().enumerate() {
            let (message, flags) = self.message(op)?;
            encode_into(&mut buf, ip(message), NLM_F_REQUEST | NLM_F_ACK | flags, i as u32 + 1);
        }
        let end = self.ops.len() as u32 + 1;
        encode_into(&mut buf, control(ControlMessage::BatchEnd), NLM_F_REQUEST, end);
        Ok(buf)
    }

    /// Sends the batch and waits for the kernel's verdict. Nothing is changed unless
    /// everything is.
    pub(crate) async fn commit(&self) -> Result<()> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let buf = self.encode()?;
        let socket = open()?;
        if buf.len() > DEFAULT_SNDBUF {
            use std::os::fd::AsFd;
            nix::sys::socket::setsockopt(
                &socket.socket_ref().as_fd(),
                nix::sys::socket::sockopt::SndBufForce,
                &(buf.len() * 2),
            )
            .map_err(|e| NetworkError::errno("raise the nftables socket's send buffer", e))?;
        }
        send(&socket, &buf).await?;
        let mut acked = 0;
        while acked < self.ops.len() {
            for message in receive(&socket).await? {
                let NetlinkPayload::Error(e) = message.payload else { continue };
                if e.code.is_none() {
                    acked += 1;
                    continue;
                }
                let seq = message.header.sequence_number as usize;
                let what = match seq.checked_sub(1).and_then(|i| self.ops.get(i)) {
                    Some(op) => format!("{op} in table ip {}", self.table),
                    None => format!("transaction on table ip {}", self.table),
                };
                return Err(NetworkError::Firewall(format!("{what}: {}", e.to_io())));
            }
        }
        Ok(())
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

/// The messages of the next datagram from the kernel.
async fn receive(socket: &TokioSocket) -> Result<Vec<NetlinkMessage<NetfilterMessage>>> {
    let (buf, _) = tokio::time::timeout(REPLY_TIMEOUT, socket.recv_from_full())
        .await
        .map_err(|_| {
            NetworkError::Firewall(format!(
                "no reply from nftables netlink within {} s",
                REPLY_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| NetworkError::io("receive from nftables netlink", e))?;
    decode_all(&buf)
}

/// Every netlink message in one datagram.
pub(crate) fn decode_all(mut buf: &[u8]) -> Result<Vec<NetlinkMessage<NetfilterMessage>>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            return Err(NetworkError::Firewall(format!(
                "malformed netlink message (length {len} of {} bytes)",
                buf.len()
            )));
        }
        let message = NetlinkMessage::<NetfilterMessage>::deserialize(&buf[..len])
            .map_err(|e| NetworkError::Firewall(format!("decode nftables netlink reply: {e}")))?;
        out.push(message);
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    Ok(out)
}

/// Whether the table (family `ip`) exists.
pub(crate) async fn table_exists(table: &str) -> Result<bool> {
    let socket = open()?;
    let mut buf = Vec::new();
    let get = NfTablesMessage::GetTable(TableMessage {
        attributes: vec![TableAttribute::Name(table.to_string())],
    });
    encode_into(&mut buf, ip(get), NLM_F_REQUEST, 1);
    send(&socket, &buf).await?;
    loop {
        for message in receive(&socket).await? {
            match message.payload {
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::NfTables(NfTablesMessage::NewTable(_)),
                    ..
                }) => return Ok(true),
                NetlinkPayload::Error(e) => match e.code {
                    Some(code) if -code.get() == libc::ENOENT => return Ok(false),
                    Some(_) => {
                        return Err(NetworkError::Firewall(format!(
                            "get table ip {table}: {}",
                            e.to_io()
                        )))
                    }
                    None => {}
                },
                _ => {}
            }
        }
    }
}

/// Every rule of the table (family `ip`) as (chain, handle, comment); empty if there is
/// no such table. A dump the kernel marks as interrupted (the ruleset changed while it
/// was read) is read again.
pub(crate) async fn list_rules(table: &str) -> Result<Vec<ListedRule>> {
    for _ in 0..10 {
        if let Some(rules) = dump_rules(table).await? {
            return Ok(rules);
        }
    }
    Err(NetworkError::Firewall(format!(
        "list table ip {table}: the ruleset kept changing while it was read"
    )))
}

/// One dump of the table's rules; `None` if the kernel marked it interrupted.
async fn dump_rules(table: &str) -> Result<Option<Vec<ListedRule>>> {
    let socket = open()?;
    let mut buf = Vec::new();
    let get = NfTablesMessage::GetRule(RuleMessage {
        attributes: vec![RuleAttribute::Table(table.to_string())],
    });
    encode_into(&mut buf, ip(get), NLM_F_REQUEST | NLM_F_DUMP, 1);
    send(&socket, &buf).await?;
    let mut rules = Vec::new();
    let mut interrupted = false;
    loop {
        for message in receive(&socket).await? {
            interrupted |= message.header.flags & NLM_F_DUMP_INTR != 0;
            match message.payload {
                NetlinkPayload::Done(_) => {
                    return Ok((!interrupted).then_some(rules));
                }
                NetlinkPayload::Error(e) => match e.code {
                    Some(code) if -code.get() == libc::ENOENT => return Ok(Some(Vec::new())),
                    Some(_) => {
                        return Err(NetworkError::Firewall(format!(
                            "list table ip {table}: {}",
                            e.to_io()
                        )))
                    }
                    None => {}
                },
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::NfTables(NfTablesMessage::NewRule(rule)),
                    ..
                }) => {
                    if let Some(rule) = listed_rule(table, rule) {
                        rules.push(rule);
                    }
                }
                _ => {}
            }
        }
    }
}

/// (chain, handle, comment) of a listed rule of `table`.
pub(crate) fn listed_rule(table: &str, rule: RuleMessage) -> Option<ListedRule> {
    let (mut in_table, mut chain, mut handle, mut comment) = (false, None, None, None);
    for attribute in rule.attributes {
        match attribute {
            RuleAttribute::Table(t) => in_table = t == table,
            RuleAttribute::Chain(c) => chain = Some(c),
            RuleAttribute::Handle(h) => handle = Some(h),
            RuleAttribute::UserData(u) => comment = userdata_comment(&u),
            _ => {}
        }
    }
    if !in_table {
        return None;
    }
    Some((chain?, handle?, comment))
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

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

    #[test]
    fn batches_frame_their_messages() {
        let mut batch = Batch::new("bt");
        batch.push(Op::AddTable);
        batch.push(Op::DeleteRule { chain: "output".into(), handle: 7 });
        let buf = batch.encode().unwrap();
        let messages = decode_all(&buf).unwrap();
        assert_eq!(messages.len(), 4);
        let seqs: Vec<u32> = messages.iter().map(|m| m.header.sequence_number).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        // Begin and end: subsystem 0, types 16 and 17, res_id NFNL_SUBSYS_NFTABLES.
        assert_eq!(messages[0].header.message_type, 16);
        assert_eq!(messages[3].header.message_type, 17);
        assert_eq!(&buf[16..20], &[0, 0, 0, 10]);
        // nf_tables messages: subsystem 10, family ip, request + ack.
        assert_eq!(messages[1].header.message_type, 10 << 8); // NEWTABLE (0)
        assert_eq!(messages[2].header.message_type, (10 << 8) | 8); // DELRULE
        assert_eq!(messages[1].header.flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(messages[2].header.flags, NLM_F_REQUEST | NLM_F_ACK);
        let NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::NfTables(NfTablesMessage::DeleteRule(rule)),
            ..
        }) = &messages[2].payload
        else {
            panic!("{:?}", messages[2]);
        };
        assert_eq!(listed_rule("bt", rule.clone()), Some(("output".into(), 7, None)));
        assert_eq!(listed_rule("other", rule.clone()), None);
    }

    #[test]
    fn listed_rules_carry_chain_handle_and_comment() {
        let rule = RuleMessage {
            attributes: vec![
                RuleAttribute::Table("bt".into()),
                RuleAttribute::Chain("prerouting".into()),
                RuleAttribute::Handle(42),
                RuleAttribute::Expressions(vec![Expr::Masquerade.to_netlink()]),
                RuleAttribute::UserData(comment_userdata("berth:pod=a|tcp/0.0.0.0:80").unwrap()),
            ],
        };
        // Through the wire format and back, as a dump delivers it.
        let mut buf = Vec::new();
        encode_into(&mut buf, ip(NfTablesMessage::NewRule(rule.clone())), 0, 5);
        let messages = decode_all(&buf).unwrap();
        let NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::NfTables(NfTablesMessage::NewRule(back)),
            ..
        }) = &messages[0].payload
        else {
            panic!("{:?}", messages[0]);
        };
        assert_eq!(
            listed_rule("bt", back.clone()),
            Some(("prerouting".into(), 42, Some("berth:pod=a|tcp/0.0.0.0:80".into())))
        );
        assert_eq!(NfTablesMessage::NewRule(rule).buffer_len(), buf.len() - 20);
    }
}
