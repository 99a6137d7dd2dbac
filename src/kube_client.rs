//! The Kubernetes client: kubeconfig or in-cluster config, with every API
//! request counted in `kubestash_kube_api_requests_total{verb,code}` and a
//! User-Agent naming the replica (`kubestash/VERSION (IDENTITY)`), so that
//! audit logs tell replicas apart.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use kube::client::{Body, ClientBuilder};
use tower::{Layer, Service};

use crate::metrics::Metrics;

/// Builds a client from the usual configuration chain (`KUBECONFIG`,
/// `~/.kube/config`, in-cluster service account).
pub async fn client(metrics: Metrics, identity: Option<&str>) -> Result<kube::Client, kube::Error> {
    let builder = ClientBuilder::try_from(config(identity).await?)?;
    Ok(builder
        .with_layer(&ObserveLayer::new(CountRequests { metrics }))
        .build())
}

/// Like [`client`], with `observer` told of every request too.
pub async fn observed_client(
    metrics: Metrics,
    identity: Option<&str>,
    observer: impl RequestObserver,
) -> Result<kube::Client, kube::Error> {
    let builder = ClientBuilder::try_from(config(identity).await?)?;
    Ok(builder
        .with_layer(&ObserveLayer::new(CountRequests { metrics }))
        .with_layer(&ObserveLayer::new(observer))
        .build())
}

async fn config(identity: Option<&str>) -> Result<kube::Config, kube::Error> {
    let mut config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    if let Ok(agent) = http::HeaderValue::from_str(&user_agent(identity)) {
        config.headers.push((http::header::USER_AGENT, agent));
    }
    Ok(config)
}

/// `kubestash/VERSION`, with ` (IDENTITY)` when the replica has one.
pub fn user_agent(identity: Option<&str>) -> String {
    let base = concat!("kubestash/", env!("CARGO_PKG_VERSION"));
    match identity {
        Some(identity) => format!("{base} ({identity})"),
        None => base.to_owned(),
    }
}

/// The verb of a request as the apiserver names it, close enough for a metric:
/// `watch` for watches, otherwise the HTTP method in lower case.
pub fn verb_of<B>(request: &Request<B>) -> &'static str {
    let is_watch = request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    match *request.method() {
        http::Method::GET if is_watch => "watch",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// Told of each request as it is sent; what it returns is told the
/// response's status (`None` when no response came back).
pub trait RequestObserver: Clone + Send + Sync + 'static {
    /// Called as `request` is sent.
    fn sent(&self, request: &Request<Body>) -> Box<dyn FnOnce(Option<http::StatusCode>) + Send>;
}

/// A tower layer telling an [`RequestObserver`] of every request.
#[derive(Clone)]
pub struct ObserveLayer<O> {
    observer: O,
}

impl<O> ObserveLayer<O> {
    /// A layer for `observer`.
    pub fn new(observer: O) -> Self {
        Self { observer }
    }
}

impl<S, O: Clone> Layer<S> for ObserveLayer<O> {
    type Service = Observe<S, O>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            observer: self.observer.clone(),
        }
    }
}

/// The service [`ObserveLayer`] makes.
#[derive(Clone)]
pub struct Observe<S, O> {
    inner: S,
    observer: O,
}

impl<S, B, O> Service<Request<Body>> for Observe<S, O>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
    O: RequestObserver,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let answered = self.observer.sent(&request);
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            answered(result.as_ref().ok().map(|r| r.status()));
            result
        })
    }
}

/// Counts requests by verb and response code.
#[derive(Clone)]
struct CountRequests {
    metrics: Metrics,
}

impl RequestObserver for CountRequests {
    fn sent(&self, request: &Request<Body>) -> Box<dyn FnOnce(Option<http::StatusCode>) + Send> {
        let verb = verb_of(request);
        let metrics = self.metrics.clone();
        Box::new(move |status| metrics.record_kube_request(verb, status.map(|s| s.as_u16())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    #[test]
    fn the_user_agent_names_the_replica() {
        assert_eq!(
            user_agent(Some("kubestash-0_1a2b3c4d")),
            format!(
                "kubestash/{} (kubestash-0_1a2b3c4d)",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(http::HeaderValue::from_str(&user_agent(None)).is_ok());
    }

    #[test]
    fn verbs_follow_the_apiserver_names() {
        assert_eq!(
            verb_of(&request(
                "GET",
                "/api/v1/secrets?&watch=true&timeoutSeconds=290"
            )),
            "watch"
        );
        assert_eq!(
            verb_of(&request("GET", "/api/v1/namespaces/a/secrets/b")),
            "get"
        );
        assert_eq!(
            verb_of(&request(
                "PATCH",
                "/api/v1/namespaces/a/secrets/b?fieldManager=x"
            )),
            "patch"
        );
        assert_eq!(
            verb_of(&request(
                "POST",
                "/apis/events.k8s.io/v1/namespaces/default/events"
            )),
            "create"
        );
    }
}
