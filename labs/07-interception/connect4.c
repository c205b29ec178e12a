/* Lab 07, part B — the app's connect() is sent to Envoy, by the kernel, with no
 * iptables rule. Attached to the cgroup of the pod's processes (the app, Envoy and the
 * loader); a process outside that cgroup is never seen. The maps and constants are in
 * bpf/mesh.h; bpf/loader.py compiles and attaches this file with the given programs.
 *
 * ctx->user_ip4 and ctx->user_port hold the destination connect() was called with, in
 * network byte order; writing them changes where the connection goes. */
#include "mesh.h"

SEC("cgroup/connect4")
int mesh_connect4(struct bpf_sock_addr *ctx)
{
    if (ctx->protocol != 6 /* IPPROTO_TCP */)
        return 1;

    /* TODO(step 7): leave Envoy's own connects alone (its uid is ENVOY_UID; see
     *   bpf_get_current_uid_gid), and loopback (127.0.0.0/8) too. */

    /* TODO(step 6): remember the destination (a struct origin) in mesh_by_cookie under
     *   the socket's cookie (bpf_get_socket_cookie), then rewrite the destination to
     *   127.0.0.1:OUTBOUND_PORT. */

    return 1;                             /* 1: let the connect proceed */
}

char LICENSE[] SEC("license") = "GPL";
