"""The recurrent layers LSTMUnit, LSTM and RNN, as BVLC Caffe 1.0 computes them.

BVLC's LSTM and RNN layers build an unrolled internal net (recurrent_layer.cpp, lstm_layer.cpp, rnn_layer.cpp);
here the same computation runs as one torch loop over the T timesteps, with the same parameter blobs in the
same order and shapes, so BVLC caffemodels load unchanged:

* LSTM: ``W_xc`` (4H, D), ``b_c`` (4H), [``W_xc_static`` (4H, D_static)], ``W_hc`` (4H, H);
* RNN: ``W_xh`` (H, D), ``b_h`` (H), [``W_xh_static`` (H, D_static)], ``W_hh`` (H, H), ``W_ho`` (H, H),
  ``b_o`` (H);

with H = ``recurrent_param.num_output``, D = the product of bottom[0]'s axes after (T, N), D_static that of
the optional static input's axes after N.  The weights use ``weight_filler``, the biases ``bias_filler``.

Bottoms: ``x`` (T, N, ...), ``cont`` (T, N) (0 starts a new sequence: the previous hidden state is
multiplied by cont), optionally ``x_static`` (N, ...), and with ``expose_hidden`` the initial states
(h_0, and c_0 for LSTM; each (1, N, H)).  Tops: h (LSTM) or o (RNN), (T, N, H); with ``expose_hidden`` the
final states too (h_T, and c_T for LSTM).  Without ``expose_hidden`` the final state of one forward is the
initial state of the next (zero at first, and after :meth:`reset` or a change of N), as in Caffe.

Gradients are BVLC's: none to ``cont`` (an error if asked), and -- because BVLC's unrolled net shares only
the data of the exposed state blobs -- none flows into the exposed h_0 / c_0 bottoms (their diff is zero) nor
from the exposed h_T / c_T tops.
"""
from __future__ import annotations

import torch

from ..layer import TorchLayer, register
from ._common import count, make_param, param_dtype

__all__ = ["LSTMUnitLayer", "LSTMLayer", "RNNLayer", "lstm_unit"]


class _LSTMUnitFunction(torch.autograd.Function):
    """One LSTM step on (1, N, H) / (1, N, 4H) / (1, N) tensors, with Caffe's hand-written backward."""

    @staticmethod
    def forward(ctx, c_prev, x, cont):
        H = c_prev.shape[-1]
        i = torch.sigmoid(x[..., :H])
        cnt = cont.unsqueeze(-1)
        f = torch.where(cnt == 0, torch.zeros_like(cnt), cnt * torch.sigmoid(x[..., H:2 * H]))
        o = torch.sigmoid(x[..., 2 * H:3 * H])
        g = torch.tanh(x[..., 3 * H:])
        c = f * c_prev + i * g
        tanh_c = torch.tanh(c)
        ctx.save_for_backward(c_prev, i, f, o, g, tanh_c)
        return c, o * tanh_c

    @staticmethod
    def backward(ctx, dc, dh):
        c_prev, i, f, o, g, tanh_c = ctx.saved_tensors
        if dc is None:
            dc = torch.zeros_like(c_prev)
        if dh is None:
            dh = torch.zeros_like(c_prev)
        c_term = dc + dh * o * (1 - tanh_c * tanh_c)
        dx = torch.cat([c_term * g * i * (1 - i), c_term * c_prev * f * (1 - f),
                        dh * tanh_c * o * (1 - o), c_term * i * (1 - g * g)], dim=-1)
        return c_term * f, dx, None


def lstm_unit(c_prev: torch.Tensor, x: torch.Tensor, cont: torch.Tensor):
    """Caffe's LSTMUnit: gates i, f, o, g from the four H-wide slices of ``x`` (sigmoid, sigmoid, sigmoid,
    tanh), f forced to cont * f (0 where cont is 0); c = f c_prev + i g, h = o tanh(c).  Returns (c, h)."""
    return _LSTMUnitFunction.apply(c_prev, x, cont.detach())


@register("LSTMUnit")
class LSTMUnitLayer(TorchLayer):
    """Caffe's LSTMUnit: bottoms c_prev (1, N, H), gate inputs (1, N, 4H), cont (1, N); tops c, h (1, N, H)."""

    exact_bottoms = 3
    exact_tops = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def reshape(self, bottom, top):
        n = bottom[0].shape[1] if bottom[0].num_axes > 1 else None
        for i, b in enumerate(bottom):
            want = 2 if i == 2 else 3
            if b.num_axes != want:
                raise self.error(f"bottom[{i}] must have {want} axes, got shape {b.shape}")
            if b.shape[0] != 1:
                raise self.error(f"bottom[{i}] must hold a single timestep (shape(0) == 1), got shape {b.shape}")
            if b.shape[1] != n:
                raise self.error(f"bottom[{i}] has {b.shape[1]} instances (shape(1)), bottom[0] has {n}")
        h = bottom[0].shape[2]
        if bottom[1].shape[2] != 4 * h:
            raise self.error(f"bottom[1].shape(2) must be 4 x bottom[0].shape(2) = {4 * h}, got {bottom[1].shape}")
        top[0].reshape(bottom[0].shape)
        top[1].reshape(bottom[0].shape)

    def compute(self, bottoms, params):
        c, h = lstm_unit(bottoms[0], bottoms[1], bottoms[2])
        return [c, h]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise self.error("Cannot backpropagate to sequence indicators (bottom[2])")
        super().backward(top, propagate_down, bottom)


class _RecurrentLayer(TorchLayer):
    """Caffe's RecurrentLayer: bottom / top bookkeeping, state carrying, parameter creation."""

    #: names of the recurrent state blobs (inputs h_0 ...; outputs follow the same order)
    recur_names: tuple = ()
    #: gate multiplier: the hidden transforms produce gates x num_output values
    gates = 1

    def __init__(self, param, phase, device):
        super().__init__(param, phase, device)
        self.expose_hidden = bool(param.recurrent_param.expose_hidden)
        nrec = len(self.recur_names) if self.expose_hidden else 0
        self.min_bottoms = 2 + nrec
        self.max_bottoms = 3 + nrec
        self.exact_tops = 1 + nrec
        self._state = None

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1

    def reset(self) -> None:
        """Caffe's RecurrentLayer::Reset: zero the carried hidden state."""
        self._state = None

    def layer_setup(self, bottom, top):
        p = self.layer_param.recurrent_param
        if bottom[0].num_axes < 2:
            raise self.error(f"bottom[0] must have at least 2 axes -- (#timesteps, #streams, ...); got shape "
                             f"{bottom[0].shape}")
        self.T, self.N = bottom[0].shape[0], bottom[0].shape[1]
        if bottom[1].num_axes != 2:
            raise self.error(f"bottom[1] must have exactly 2 axes -- (#timesteps, #streams); got shape "
                             f"{bottom[1].shape}")
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            raise self.error("num_output must be positive (recurrent_param.num_output)")
        nrec = len(self.recur_names) if self.expose_hidden else 0
        self.static_input = len(bottom) > 2 + nrec
        if self.static_input:
            if bottom[2].num_axes < 1 or bottom[2].shape[0] != self.N:
                raise self.error(f"the static input bottom[2] must have shape (N = {self.N}, ...), got "
                                 f"{bottom[2].shape}")
        dt = param_dtype(bottom)
        H = self.num_output
        GH = self.gates * H
        d = count(bottom[0].shape, 2)
        blobs = [make_param(self, (GH, d), p.weight_filler, dt, "recurrent_param.weight_filler"),
                 make_param(self, (GH,), p.bias_filler, dt, "recurrent_param.bias_filler")]
        if self.static_input:
            ds = count(bottom[2].shape, 1)
            blobs.append(make_param(self, (GH, ds), p.weight_filler, dt, "recurrent_param.weight_filler"))
        blobs += self.extra_params(p, dt)
        self.blobs = blobs

    def extra_params(self, p, dt):
        raise NotImplementedError

    def reshape(self, bottom, top):
        s0, s1 = bottom[0].shape, bottom[1].shape
        if len(s0) < 2:
            raise self.error(f"bottom[0] must have at least 2 axes -- (#timesteps, #streams, ...); got {s0}")
        if s0[0] != self.T:
            raise self.error(f"input number of timesteps changed (was {self.T}, now {s0[0]})")
        if count(s0, 2) != self.blobs[0].shape[1]:
            raise self.error(f"bottom[0] of shape {s0} has {count(s0, 2)} values per item; the layer was set up "
                             f"for {self.blobs[0].shape[1]}")
        self.N = s0[1]
        if len(s1) != 2 or s1[0] != self.T or s1[1] != self.N:
            raise self.error(f"bottom[1] (cont) must have shape (T, N) = ({self.T}, {self.N}), got {s1}")
        if self.static_input and (bottom[2].shape[0] != self.N
                                  or count(bottom[2].shape, 1) != self.blobs[2].shape[1]):
            raise self.error(f"the static input bottom[2] has shape {bottom[2].shape}; expected (N = {self.N}, "
                             f"{self.blobs[2].shape[1]} values)")
        state_shape = (1, self.N, self.num_output)
        if self.expose_hidden:
            first = 2 + int(self.static_input)
            for j, name in enumerate(self.recur_names):
                if bottom[first + j].shape != state_shape:
                    raise self.error(f"shape mismatch - recurrent input {name}: {state_shape} vs. "
                                     f"bottom[{first + j}]: {bottom[first + j].shape}")
            for t in top[1:]:
                t.reshape(state_shape)
        top[0].reshape((self.T, self.N, self.num_output))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("Cannot backpropagate to sequence indicators (bottom[1])")
        super().backward(top, propagate_down, bottom)

    def compute(self, bottoms, params):
        x, cont = bottoms[0], bottoms[1].detach()
        T, N, H = self.T, self.N, self.num_output
        xin = torch.nn.functional.linear(x.reshape(T, N, -1), params[0], params[1])  # (T, N, gates H)
        k = 2
        static = None
        if self.static_input:
            static = torch.nn.functional.linear(bottoms[2].reshape(N, -1), params[2]).unsqueeze(0)
            k = 3
        if self.expose_hidden:
            first = 2 + int(self.static_input)
            state = [bottoms[first + j].detach() for j in range(len(self.recur_names))]
        else:
            state = self._state
            if state is None or tuple(state[0].shape) != (1, N, H) or state[0].dtype != x.dtype \
                    or state[0].device != x.device:
                state = [torch.zeros((1, N, H), dtype=x.dtype, device=x.device) for _ in self.recur_names]
        outs, final = self.unroll(xin, cont, static, state, params[k:])
        final = [f.detach() for f in final]
        if not self.expose_hidden:
            self._state = final
            return [outs]
        return [outs] + final

    def unroll(self, xin, cont, static, state, params):
        raise NotImplementedError


@register("LSTM")
class LSTMLayer(_RecurrentLayer):
    """Caffe's LSTM: gate_t = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static];
    (c_t, h_t) = LSTMUnit(c_{t-1}, gate_t, cont_t).  Top h = (h_1 .. h_T)."""

    recur_names = ("h_0", "c_0")
    gates = 4

    def extra_params(self, p, dt):
        H = self.num_output
        return [make_param(self, (4 * H, H), p.weight_filler, dt, "recurrent_param.weight_filler")]

    def unroll(self, xin, cont, static, state, params):
        (W_hc,) = params
        h, c = state
        hs = []
        for t in range(self.T):
            ct = cont[t:t + 1]  # (1, N)
            gate = torch.nn.functional.linear(h * ct.unsqueeze(-1), W_hc) + xin[t:t + 1]
            if static is not None:
                gate = gate + static
            c, h = lstm_unit(c, gate, ct)
            hs.append(h)
        return torch.cat(hs, dim=0), [h, c]


@register("RNN")
class RNNLayer(_RecurrentLayer):
    """Caffe's RNN: h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static]);
    o_t = tanh(W_ho h_t + b_o).  Top o = (o_1 .. o_T)."""

    recur_names = ("h_0",)

    def extra_params(self, p, dt):
        H = self.num_output
        return [make_param(self, (H, H), p.weight_filler, dt, "recurrent_param.weight_filler"),
                make_param(self, (H, H), p.weight_filler, dt, "recurrent_param.weight_filler"),
                make_param(self, (H,), p.bias_filler, dt, "recurrent_param.bias_filler")]

    def unroll(self, xin, cont, static, state, params):
        W_hh, W_ho, b_o = params
        (h,) = state
        os_ = []
        for t in range(self.T):
            pre = torch.nn.functional.linear(h * cont[t:t + 1].unsqueeze(-1), W_hh) + xin[t:t + 1]
            if static is not None:
                pre = pre + static
            h = torch.tanh(pre)
            os_.append(torch.tanh(torch.nn.functional.linear(h, W_ho, b_o)))
        return torch.cat(os_, dim=0), [h]
