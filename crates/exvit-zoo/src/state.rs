//! A module's tensors by name, with timm's `state_dict` keys.
//!
//! burn builds parameter paths from field names and `Vec` indices, which are timm's module
//! names, except that a derived enum module adds its variant name; these helpers leave enum
//! variants out of the path.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorData;

/// Whether a tensor is learned or a running statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// A learned parameter.
    Param,
    /// A buffer: `running_mean`, `running_var` or `num_batches_tracked`.
    Buffer,
}

impl TensorKind {
    /// The kind of the tensor stored under `key`, from its last component.
    pub fn of(key: &str) -> Self {
        if exvit_common::is_buffer_key(key) {
            TensorKind::Buffer
        } else {
            TensorKind::Param
        }
    }
}

/// One tensor of a module, with its timm key.
#[derive(Debug, Clone)]
pub struct NamedTensor {
    /// The `state_dict` key.
    pub key: String,
    /// The values (f32 on the CPU backends).
    pub data: TensorData,
}

impl NamedTensor {
    /// Param or buffer.
    pub fn kind(&self) -> TensorKind {
        TensorKind::of(&self.key)
    }
}

#[derive(Default)]
struct PathStack {
    parts: Vec<String>,
    /// One flag per `enter_module`: whether it pushed a part.
    pushed: Vec<bool>,
}

impl PathStack {
    fn enter(&mut self, name: &str, container: &str) {
        let push = !container.starts_with("Enum:");
        if push {
            self.parts.push(name.to_string());
        }
        self.pushed.push(push);
    }

    fn exit(&mut self) {
        if self.pushed.pop().unwrap_or(false) {
            self.parts.pop();
        }
    }

    fn key(&self) -> String {
        self.parts.join(".")
    }
}

/// What a walk over a module's float tensors does with each, given its timm key.
trait KeyedVisit<B: Backend> {
    fn float<const D: usize>(&mut self, key: String, param: &Param<Tensor<B, D>>);
}

/// What a map over a module's float tensors does with each, given its timm key.
trait KeyedMap<B: Backend> {
    fn float<const D: usize>(&mut self, key: String, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>>;
}

/// The one [`ModuleVisitor`] / [`ModuleMapper`]: it keeps the path (enum variants left out) and
/// hands each float tensor to `inner` with its key.
struct Keyed<V> {
    path: PathStack,
    inner: V,
}

impl<V> Keyed<V> {
    fn new(inner: V) -> Self {
        Keyed { path: PathStack::default(), inner }
    }
}

impl<B: Backend, V: KeyedVisit<B>> ModuleVisitor<B> for Keyed<V> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.inner.float(self.path.key(), param);
    }
}

impl<B: Backend, V: KeyedMap<B>> ModuleMapper<B> for Keyed<V> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        self.inner.float(self.path.key(), param)
    }
}

/// Walks `module` with `inner` and returns it.
fn visit_keyed<B: Backend, M: Module<B>, V: KeyedVisit<B>>(module: &M, inner: V) -> V {
    let mut k = Keyed::new(inner);
    module.visit(&mut k);
    k.inner
}

/// Applies the pending updates of every `RunningState` (BN statistics).
///
/// burn's `RunningState::update` parks a train-mode update per thread and applies it at the next
/// `value_sync`, so plain visiting would read statistics one step old, and mapping would be
/// overwritten by the parked update later. `into_record` syncs; the states are shared with the
/// clone, so syncing the clone syncs `module`.
fn sync_running_states<B: Backend, M: Module<B>>(module: &M) {
    let _ = module.clone().into_record();
}

struct Collector(Vec<NamedTensor>);

impl<B: Backend> KeyedVisit<B> for Collector {
    fn float<const D: usize>(&mut self, key: String, param: &Param<Tensor<B, D>>) {
        self.0.push(NamedTensor { key, data: param.val().into_data() });
    }
}

/// Every float tensor of `module` (parameters and running statistics), in declaration order,
/// keyed as in timm.
pub fn named_tensors<B: Backend, M: Module<B>>(module: &M) -> Vec<NamedTensor> {
    sync_running_states(module);
    visit_keyed(module, Collector(Vec::new())).0
}

struct Updater<F>(F);

impl<B: Backend, F: FnMut(&str, &[usize]) -> Option<TensorData>> KeyedMap<B> for Updater<F> {
    fn float<const D: usize>(&mut self, key: String, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let f = &mut self.0;
        param.map(|t| {
            let dims = t.dims();
            match f(&key, &dims) {
                Some(data) => {
                    assert_eq!(
                        data.shape.as_slice(),
                        &dims[..],
                        "update_named: new value of `{key}` has the wrong shape"
                    );
                    let require_grad = t.is_require_grad();
                    Tensor::<B, D>::from_data(data.convert::<f32>(), &t.device()).set_require_grad(require_grad)
                }
                None => t,
            }
        })
    }
}

/// Replaces tensors of `module` by key: `f(key, shape)` returns the new values, or `None` to
/// keep the tensor. Parameter ids and `require_grad` are kept.
///
/// # Panics
/// When `f` returns data whose shape differs from `shape` (callers validate first).
pub fn update_named<B: Backend, M: Module<B>>(module: M, f: impl FnMut(&str, &[usize]) -> Option<TensorData>) -> M {
    sync_running_states(&module);
    module.map(&mut Keyed::new(Updater(f)))
}

/// Number of learned values (`TensorKind::Param`), as timm's
/// `sum(p.numel() for p in model.parameters())`. burn's `num_params` also counts running
/// statistics.
pub fn count_params<B: Backend, M: Module<B>>(module: &M) -> usize {
    named_tensors(module).iter().filter(|t| t.kind() == TensorKind::Param).map(|t| t.data.num_elements()).sum()
}

struct GradCollector<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    out: Vec<(String, Option<TensorData>)>,
}

impl<B: AutodiffBackend> KeyedVisit<B> for GradCollector<'_, B> {
    fn float<const D: usize>(&mut self, key: String, param: &Param<Tensor<B, D>>) {
        if TensorKind::of(&key) == TensorKind::Param {
            self.out.push((key, param.val().grad(self.grads).map(|g| g.into_data())));
        }
    }
}

/// The gradient of every learned parameter of `module`, keyed as in timm (`None` where the
/// parameter took no part in the loss).
pub fn named_grads<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &B::Gradients,
) -> Vec<(String, Option<TensorData>)> {
    visit_keyed(module, GradCollector::<B> { grads, out: Vec::new() }).out
}

struct FlatCollector<B: Backend>(Vec<(String, Tensor<B, 1>)>);

impl<B: Backend> KeyedVisit<B> for FlatCollector<B> {
    fn float<const D: usize>(&mut self, key: String, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.0.push((key, t.reshape([n])));
    }
}

/// Every float tensor of `module` (parameters and running statistics), flattened to 1-D and
/// keyed as in timm, staying on the module's device (no copy to the host). The training
/// engine's optimiser, EMA and gradient buffers work on these.
pub fn flat_tensors<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Tensor<B, 1>)> {
    sync_running_states(module);
    visit_keyed(module, FlatCollector(Vec::new())).0
}

struct FlatMapper<F>(F);

impl<B: Backend, F: FnMut(&str, Tensor<B, 1>) -> Option<Tensor<B, 1>>> KeyedMap<B> for FlatMapper<F> {
    fn float<const D: usize>(&mut self, key: String, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let f = &mut self.0;
        param.map(|t| {
            let dims = t.dims();
            let n = t.shape().num_elements();
            let require_grad = t.is_require_grad();
            match f(&key, t.clone().reshape([n])) {
                Some(new) => {
                    assert_eq!(
                        new.dims()[0],
                        n,
                        "map_flat: new value of `{key}` has {} values, not {n}",
                        new.dims()[0]
                    );
                    new.reshape(dims).set_require_grad(require_grad)
                }
                None => t,
            }
        })
    }
}

/// Replaces tensors of `module` by key, on the device: `f(key, flat)` returns the new values
/// (same length) or `None` to keep the tensor. Parameter ids and `require_grad` are kept.
pub fn map_flat<B: Backend, M: Module<B>>(module: M, f: impl FnMut(&str, Tensor<B, 1>) -> Option<Tensor<B, 1>>) -> M {
    sync_running_states(&module);
    module.map(&mut Keyed::new(FlatMapper(f)))
}

struct FlatGradCollector<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    out: Vec<(String, Tensor<B::InnerBackend, 1>)>,
}

impl<B: AutodiffBackend> KeyedVisit<B> for FlatGradCollector<'_, B> {
    fn float<const D: usize>(&mut self, key: String, param: &Param<Tensor<B, D>>) {
        if TensorKind::of(&key) == TensorKind::Param {
            if let Some(g) = param.val().grad(self.grads) {
                let n = g.shape().num_elements();
                self.out.push((key, g.reshape([n])));
            }
        }
    }
}

/// The gradient of every learned parameter that took part in the loss, flattened and keyed as
/// in timm, on the device.
pub fn flat_grads<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &B::Gradients,
) -> Vec<(String, Tensor<B::InnerBackend, 1>)> {
    visit_keyed(module, FlatGradCollector::<B> { grads, out: Vec::new() }).out
}
