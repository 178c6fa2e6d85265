//! Rotary position embedding parameters of a model: the inverse frequencies of each pair of
//! dimensions after the checkpoint's scaling rule, and YaRN's attention factor. Computed once
//! at load in f64; the backends rotate with them.
//!
//! ```text
//!  base:    inv_freq[i] = theta^(-2i / d)                                   i < d / 2
//!  linear:  inv_freq[i] / factor
//!  llama3:  wavelength 2 pi / f above original / low_freq_factor: f / factor; below
//!           original / high_freq_factor: f; between: a smooth blend of the two
//!  yarn:    low, high = the dims where beta_fast / beta_slow rotations fit the original
//!           context; ramp r(i) = clamp((i - low) / (high - low), 0, 1);
//!           f = f / factor * r + f * (1 - r);   attention factor (cos and sin scaled by it)
//!           0.1 ln(factor) + 1
//! ```

/// A checkpoint's RoPE scaling rule.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RopeScaling {
    #[default]
    None,
    Linear {
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position: f64,
    },
    /// YaRN (Qwen2.5 long context and others).
    Yarn {
        factor: f64,
        original_max_position: f64,
        beta_fast: f64,
        beta_slow: f64,
    },
}

impl RopeScaling {
    /// The inverse frequencies (`head_dim / 2` of them) for base `theta`, scaled; Llama 3's
    /// per-dimension `freq_factors` (GGUF `rope_freqs.weight`) win over the rule when given.
    pub fn inv_freq(&self, theta: f64, head_dim: usize, freq_factors: Option<&[f32]>) -> Vec<f64> {
        let half = head_dim / 2;
        let mut f: Vec<f64> = (0..half)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64))
            .collect();
        if let Some(ff) = freq_factors {
            for (x, &d) in f.iter_mut().zip(ff) {
                *x /= d as f64;
            }
            return f;
        }
        match *self {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => {
                for x in &mut f {
                    *x /= factor;
                }
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                let low_wl = original_max_position / low_freq_factor;
                let high_wl = original_max_position / high_freq_factor;
                for x in &mut f {
                    let wl = 2.0 * std::f64::consts::PI / *x;
                    if wl > low_wl {
                        *x /= factor;
                    } else if wl >= high_wl {
                        let smooth = (original_max_position / wl - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        *x = (1.0 - smooth) * *x / factor + smooth * *x;
                    }
                }
            }
            RopeScaling::Yarn {
                factor,
                original_max_position,
                beta_fast,
                beta_slow,
            } => {
                // The dimension whose wavelength fits `rotations` turns in the original context.
                let dim_for = |rotations: f64| {
                    head_dim as f64
                        * (original_max_position / (rotations * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * theta.ln())
                };
                let low = dim_for(beta_fast).floor().max(0.0);
                let high = dim_for(beta_slow).ceil().min(head_dim as f64 - 1.0);
                let span = if high > low { high - low } else { 0.001 };
                for (i, x) in f.iter_mut().enumerate() {
                    let ramp = ((i as f64 - low) / span).clamp(0.0, 1.0);
                    // ramp 0: keep the original frequency (extrapolate), 1: interpolate.
                    *x = *x / factor * ramp + *x * (1.0 - ramp);
                }
            }
        }
        f
    }

    /// The factor cos and sin are scaled by (YaRN's attention temperature; 1 otherwise).
    pub fn attention_factor(&self) -> f64 {
        match *self {
            RopeScaling::Yarn { factor, .. } if factor > 1.0 => 0.1 * factor.ln() + 1.0,
            _ => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_linear_and_llama3() {
        let f = RopeScaling::None.inv_freq(10000.0, 4, None);
        assert_eq!(f, vec![1.0, 0.01]);
        let f = RopeScaling::Linear { factor: 4.0 }.inv_freq(10000.0, 4, None);
        assert_eq!(f, vec![0.25, 0.0025]);
        let l3 = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 8192.0,
        };
        let f = l3.inv_freq(500000.0, 64, None);
        // The highest frequency (short wavelength) is kept, the lowest divided by 8.
        assert_eq!(f[0], 1.0);
        let raw_last = 1.0 / 500000f64.powf(62.0 / 64.0);
        assert!((f[31] - raw_last / 8.0).abs() < 1e-15);
        // freq_factors win over the rule.
        let f = l3.inv_freq(10000.0, 4, Some(&[2.0, 4.0]));
        assert_eq!(f, vec![0.5, 0.0025]);
        assert_eq!(l3.attention_factor(), 1.0);
    }

    #[test]
    fn yarn_interpolates_only_the_low_frequencies() {
        // Qwen2.5's 128k setting: factor 4 over a 32k original context, theta 1e6, d 128.
        let y = RopeScaling::Yarn {
            factor: 4.0,
            original_max_position: 32768.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
        };
        let base = RopeScaling::None.inv_freq(1e6, 128, None);
        let f = y.inv_freq(1e6, 128, None);
        // dim_for(32) = 128 ln(32768 / (64 pi)) / (2 ln 1e6) = 23.6 -> low 23;
        // dim_for(1) = 128 ln(32768 / (2 pi)) / (2 ln 1e6) = 39.7 -> high 40.
        for i in 0..=23 {
            assert_eq!(f[i], base[i], "dim {i} extrapolates");
        }
        for i in 40..64 {
            assert_eq!(f[i], base[i] / 4.0, "dim {i} interpolates");
        }
        let r = (31.0 - 23.0) / 17.0;
        assert!((f[31] - (base[31] / 4.0 * r + base[31] * (1.0 - r))).abs() < 1e-18);
        assert!((y.attention_factor() - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-15);
    }
}
