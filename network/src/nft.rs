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

use netlink_packet_core::{
    DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND,
    NLM_F_CREATE, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook, Immediate, InetHookNumber, ListAttribute, Meta, MetaKey, NfTablesMessage, Operator,
    Payload, Register, RuleAttribute, RuleMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use crate::error::{NetworkError, Result};

pub(crate) mod socket;

/// `NFNL_SUBSYS_NFTABLES`: the `res_id` of a batch's begin and end messages.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NF_ACCEPT`, a base chain's policy.
const NF_ACCEPT: u32 = 1;
/// `NFTNL_UDATA_RULE_COMMENT`: the userdata TLV type nft stores a rule's comment under.
const UDATA_RULE_COMMENT: u8 = 0;
/// nft refuses longer comments (`NFTNL_UDATA_COMMENT_MAXLEN`); so does berth, so that
/// what `nft list ruleset` prints can be loaded again with `nft -f`.
pub(crate) const COMMENT_MAX: usize = 128;

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

#[cfg(test)]
mod tests;
