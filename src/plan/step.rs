//! [`Step`]: which bullet of Istio's algorithm wrote an operation (its provenance).
//!
//! The numbers are those of `docs/istio-compat.md §3.2`; the files of `plan/` write the steps in
//! that order (see [`super::build`]).

/// Which bullet of Istio's algorithm (`docs/istio-compat.md §3.2`) wrote an operation: the
/// rule's provenance. It never changes what a rule matches or does (that is
/// [`Rule`](crate::model::Rule)); it lets a backend whose Istio counterpart spells each bullet by
/// hand (nft, `docs/istio-compat.md §8.3`) reproduce that spelling without re-deriving the policy,
/// and lets diagnostics say why a rule exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Step {
    /// 1. Traffic on an excluded interface is left alone (nat; mangle too in TPROXY mode).
    ExcludedInterface,
    /// 2. A virtual interface's traffic skips inbound capture.
    VirtualInterfaceReturn,
    /// 3. Conntrack-invalid packets jump to the drop chain.
    DropInvalid,
    /// 3. The drop chain's verdict.
    DropVerdict,
    /// 4. The tunnel port is never captured inbound.
    TunnelPortReturn,
    /// 5. The outbound redirect chain.
    OutboundRedirect,
    /// 6. The inbound redirect chain.
    InboundRedirect,
    /// 7 (TPROXY). Mark a diverted packet.
    DivertMark,
    /// 7 (TPROXY). Accept a diverted packet.
    DivertAccept,
    /// 7 (TPROXY). Deliver to the proxy's transparent socket.
    Tproxy,
    /// 7. Jump into inbound capture.
    InboundJump,
    /// 7. An inbound port excluded from capture (with all ports captured).
    InboundPortExclude,
    /// 7 (TPROXY). Established inbound connections are diverted.
    InboundEstablished,
    /// 7. Inbound capture, per port or for all ports.
    InboundCapture,
    /// 8. Locally generated traffic enters ISTIO_OUTPUT.
    OutputJump,
    /// 9. An outbound port never captured.
    OutboundPortExclude,
    /// 10. The proxy's inbound passthrough connections (from 127.0.0.6 / ::6).
    PassthroughReturn,
    /// 11a / 12a. The proxy's loopback traffic to the pod's own address goes to inbound capture.
    ProxyLoopbackRedirect,
    /// 11b / 12b. Other loopback traffic not of the proxy is left alone.
    ProxyLoopbackReturn,
    /// 11c / 12c. The proxy's own traffic is left alone.
    ProxyReturn,
    /// 13. Owner-group include / exclude.
    OwnerGroups,
    /// 14. raw OUTPUT enters the DNS chain.
    DnsOutputJump,
    /// 14. nat ISTIO_OUTPUT enters the DNS chain.
    DnsCaptureJump,
    /// 14. DNS to the agent (TCP and UDP; to all or to the known servers).
    DnsRedirect,
    /// 14. Conntrack zones for the proxy's own DNS traffic.
    DnsProxyZone,
    /// 14. raw PREROUTING enters the DNS reply chain.
    DnsInboundJump,
    /// 14. Conntrack zones for DNS queries and replies (all, or per server).
    DnsZone,
    /// 15. Loopback destinations are never captured.
    LoopbackReturn,
    /// 16. An excluded outbound CIDR.
    CidrExclude,
    /// 17. An outbound port always captured.
    OutboundPortInclude,
    /// 18. Outbound CIDR capture (or all destinations).
    CidrInclude,
    /// 18. A virtual interface's traffic to a captured destination.
    VirtualInterfaceRedirect,
    /// 19. The TPROXY mark is saved on the connection.
    TproxySaveMark,
    /// 19. Marked loopback traffic leaves mangle OUTPUT untouched.
    TproxyMarkedReturn,
    /// 19. The proxy's loopback traffic to non-loopback addresses gets the outbound mark.
    TproxyProxyMark,
    /// 19. The connection mark is restored on the packet.
    TproxyRestoreMark,
    /// 19. Marked packets skip TPROXY inbound capture.
    TproxyInboundMarked,
    /// 19. The passthrough source on `lo` skips TPROXY inbound capture.
    TproxyInboundPassthrough,
    /// 19. Loopback packets without the outbound mark skip TPROXY inbound capture.
    TproxyInboundLoopback,
}
