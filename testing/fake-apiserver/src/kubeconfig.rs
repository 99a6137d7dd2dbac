//! Kubeconfig for clients of the fake server (plain http, token auth ignored).

/// A kubeconfig YAML document pointing at `url` with context `fake`.
pub fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: {url}\n  name: fake\ncontexts:\n- context:\n    cluster: fake\n    namespace: default\n    user: fake\n  name: fake\ncurrent-context: fake\npreferences: {{}}\nusers:\n- name: fake\n  user: {{}}\n"
    )
}
