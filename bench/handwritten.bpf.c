/* A minimal hand-written policy program, the yardstick for the generated one (bench/datapath_curve.py).
 *
 * IPv4 only, TCP/UDP only, no events, no counters, no deny rules, no fall-back levels, one conntrack
 * look-up: parse, local endpoint (hash), conntrack (LRU hash), peer identity (LPM ipcache), verdict
 * (policy hash on policy id, peer, direction, protocol, port); an allowed TC packet creates its
 * conntrack entry.  The maps are filled from Python with as many entries as the generated artifact.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define DIR_INGRESS 1
#define DIR_EGRESS 2
#define WORLD_ID 2

struct ipcache_key { __u32 prefixlen; __be32 addr; };
struct endpoint_value { __u32 policy_id; __u32 identity; };
struct policy_key { __u32 policy_id; __u32 peer; __u8 dir; __u8 proto; __be16 port; };
struct ct_key { __be32 saddr; __be32 daddr; __be16 sport; __be16 dport; __u8 proto; __u8 dir; __u16 pad; };

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, __u32);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} hw_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, struct endpoint_value);
	__uint(max_entries, 1024);
} hw_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct policy_key);
	__type(value, __u32);
	__uint(max_entries, 1024);
} hw_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, __u64);
	__uint(max_entries, 65536);
} hw_conntrack SEC(".maps");

/* 1 pass, 0 drop */
static __always_inline int verdict(void *data, void *data_end, __u8 dir, int track)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 1;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return 0;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return 0;
	__be16 *ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 2) > data_end)
		return 0;
	__be32 local = dir == DIR_INGRESS ? ip->daddr : ip->saddr;
	__be32 remote = dir == DIR_INGRESS ? ip->saddr : ip->daddr;
	struct endpoint_value *ep = bpf_map_lookup_elem(&hw_endpoints, &local);
	if (!ep)
		return 1;
	struct ct_key ck = { .saddr = ip->saddr, .daddr = ip->daddr, .sport = ports[0], .dport = ports[1],
			     .proto = ip->protocol, .dir = dir };
	if (bpf_map_lookup_elem(&hw_conntrack, &ck))
		return 1;
	struct ipcache_key ik = { .prefixlen = 32, .addr = remote };
	__u32 *id = bpf_map_lookup_elem(&hw_ipcache, &ik);
	struct policy_key pk = { .policy_id = ep->policy_id, .peer = id ? *id : WORLD_ID, .dir = dir,
				 .proto = ip->protocol, .port = ports[1] };
	if (!bpf_map_lookup_elem(&hw_policy, &pk))
		return 0;
	if (track) {
		__u64 now = bpf_ktime_get_coarse_ns();
		bpf_map_update_elem(&hw_conntrack, &ck, &now, BPF_ANY);
	}
	return 1;
}

SEC("tc")
int hw_to_pod(struct __sk_buff *skb)
{
	return verdict((void *)(long)skb->data, (void *)(long)skb->data_end, DIR_INGRESS, 1) ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("tc")
int hw_from_pod(struct __sk_buff *skb)
{
	return verdict((void *)(long)skb->data, (void *)(long)skb->data_end, DIR_EGRESS, 1) ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("xdp")
int hw_xdp(struct xdp_md *ctx)
{
	return verdict((void *)(long)ctx->data, (void *)(long)ctx->data_end, DIR_INGRESS, 0) ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
