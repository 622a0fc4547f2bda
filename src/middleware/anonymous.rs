//! Lets an anonymous page view skip a middleware it cannot use: a `GET` or `HEAD` without the
//! session cookie has no session to load and no identity to read, and (but for the routes in
//! `signs_in_on_get` in [`crate::web::policy::POLICY`]) cannot start one, so the session and identity layers
//! are stepped around for it.

use std::rc::Rc;

use crate::web::policy::rule_of;
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::Method;
use actix_web::{Error, HttpMessage as _};
use futures_util::future::LocalBoxFuture;

/// Wraps `inner` so that it only sees requests that may carry or start a session.
pub struct UnlessAnonymousView<T> {
    inner: T,
    session_cookie: Rc<str>,
}

impl<T> UnlessAnonymousView<T> {
    pub fn new(inner: T, session_cookie: &str) -> Self {
        Self {
            inner,
            session_cookie: session_cookie.into(),
        }
    }
}

/// Set on a request that went around the session and identity layers: it has neither, and
/// asking for its identity would panic in actix-identity.
#[derive(Debug, Clone, Copy)]
pub struct AnonymousView;

fn is_anonymous_view(req: &ServiceRequest, session_cookie: &str) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
        && !rule_of(req.request()).signs_in_on_get
        && req.cookie(session_cookie).is_none()
}

/// The next service, shared by the wrapped middleware and the way around it.
pub struct Shared<S>(Rc<S>);

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Self(Rc::clone(&self.0))
    }
}

impl<S: Service<ServiceRequest>> Service<ServiceRequest> for Shared<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        self.0.call(req)
    }
}

impl<S, B, T> Transform<S, ServiceRequest> for UnlessAnonymousView<T>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    T: Transform<Shared<S>, ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    T::Future: 'static,
    T::Transform: 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = UnlessAnonymousViewService<S, T::Transform>;
    type InitError = T::InitError;
    type Future = LocalBoxFuture<'static, Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let around = Shared(Rc::new(service));
        let through = self.inner.new_transform(around.clone());
        let session_cookie = Rc::clone(&self.session_cookie);
        Box::pin(async move {
            Ok(UnlessAnonymousViewService {
                through: through.await?,
                around,
                session_cookie,
            })
        })
    }
}

pub struct UnlessAnonymousViewService<S, M> {
    through: M,
    around: Shared<S>,
    session_cookie: Rc<str>,
}

impl<S, B, M> Service<ServiceRequest> for UnlessAnonymousViewService<S, M>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    S::Future: 'static,
    M: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    M::Future: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(through);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if is_anonymous_view(&req, &self.session_cookie) {
            req.extensions_mut().insert(AnonymousView);
            Box::pin(self.around.call(req))
        } else {
            Box::pin(self.through.call(req))
        }
    }
}
