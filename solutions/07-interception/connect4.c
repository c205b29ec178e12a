/* Lab 07, part B — the app's connect() is sent to Envoy, by the kernel, with no
 * iptables rule. Attached to the cgroup of the pod's processes (the app, Envoy and the
 * loader); a process outside that cgroup is never seen. */
#include "mesh.h"

SEC("cgroup/connect4")
int mesh_connect4(struct bpf_sock_addr *ctx)
{
    if (ctx->protocol != 6 /* IPPROTO_TCP */)
        return 1;
    /* Envoy's own connects go where Envoy sends them, or Envoy would reach itself. */
    if ((bpf_get_current_uid_gid() & 0xffffffff) == ENVOY_UID)
        return 1;
    /* Loopback stays loopback (the pod's processes talk to each other there). */
    if ((bpf_ntohl(ctx->user_ip4) >> 24) == 127)
        return 1;

    struct origin origin = { .ip = ctx->user_ip4, .port = (__u16)ctx->user_port };
    __u64 cookie = bpf_get_socket_cookie(ctx);
    bpf_map_update_elem(&mesh_by_cookie, &cookie, &origin, BPF_ANY);

    ctx->user_ip4 = bpf_htonl(LOCALHOST);
    ctx->user_port = bpf_htons(OUTBOUND_PORT);
    return 1;                             /* 1: let the (rewritten) connect proceed */
}

char LICENSE[] SEC("license") = "GPL";
