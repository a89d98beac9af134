use super::socket::{replies, Reply, NLMSG_DONE, NLMSG_ERROR};
use super::*;
use netlink_packet_core::NLM_F_DUMP_INTR;

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
    for (kind, seq, code) in [(NLMSG_ERROR, 6u32, 0i32), (NLMSG_ERROR, 7, -2), (NLMSG_DONE, 5, 0)] {
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
