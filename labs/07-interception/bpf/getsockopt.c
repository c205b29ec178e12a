/* Lab 07, part B — given. Envoy's original_dst listener filter asks the accepted
 * socket for SO_ORIGINAL_DST, which only conntrack (iptables) can answer. Without
 * iptables the kernel says ENOENT; this program answers instead, from the map. */
#include "mesh.h"

#define SOL_IP 0
#define SO_ORIGINAL_DST 80

struct sockaddr_in_ {
    __u16 family;
    __u16 port;
    __u32 addr;
    __u8 zero[8];
};

SEC("cgroup/getsockopt")
int mesh_getsockopt(struct bpf_sockopt *ctx)
{
    if (ctx->level != SOL_IP || ctx->optname != SO_ORIGINAL_DST || !ctx->sk)
        return 1;                         /* not our question: the kernel's answer stands */
    __u32 peer = bpf_ntohs(ctx->sk->dst_port);   /* the app's local port */
    struct origin *origin = bpf_map_lookup_elem(&mesh_by_port, &peer);
    if (!origin)
        return 1;
    struct sockaddr_in_ *answer = ctx->optval;
    if ((void *)(answer + 1) > ctx->optval_end)
        return 1;
    /* volatile: without it clang merges neighbouring stores into one 8-byte write,
     * which the verifier refuses for these fields */
    *(volatile __u16 *)&answer->family = 2;     /* AF_INET */
    *(volatile __u16 *)&answer->port = origin->port;
    *(volatile __u32 *)&answer->addr = origin->ip;
    *(volatile __s32 *)&ctx->optlen = sizeof(*answer);
    *(volatile __s32 *)&ctx->retval = 0;
    return 1;
}

char LICENSE[] SEC("license") = "GPL";
