//! Run-time choice of the vector instructions a hot kernel is compiled for.
//!
//! A kernel body is written once, as safe generic code over two constants:
//! `FMA` (whether `a·b + c` is one fused multiply-add, rounded once) and
//! `W` (doubles per vector register: 8 for AVX-512, 4 for AVX2, 2 for
//! SSE2). [`run`] compiles it three times, inside `#[target_feature]`
//! functions for AVX-512 + FMA and AVX2 + FMA and as portable code, and
//! calls the widest one the CPU has. LLVM vectorises the body's
//! fixed-size lane loops with the instructions its wrapper enables.
//!
//! This is the one place with `unsafe`: calling a `#[target_feature]`
//! function after `is_x86_feature_detected!` has checked the features.

/// The instruction sets a kernel is compiled for, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// No FMA: plain multiply and add, 2 doubles per SSE2 register.
    Portable,
    /// AVX2 + FMA: 4 doubles per register.
    Avx2Fma,
    /// AVX-512F + FMA: 8 doubles per register.
    Avx512Fma,
}

impl Isa {
    /// The widest set this CPU has.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            let fma = std::is_x86_feature_detected!("fma");
            if fma && std::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512Fma;
            }
            if fma && std::is_x86_feature_detected!("avx2") {
                return Isa::Avx2Fma;
            }
        }
        Isa::Portable
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable (no FMA)",
            Isa::Avx2Fma => "AVX2 + FMA",
            Isa::Avx512Fma => "AVX-512F + FMA",
        }
    }

    /// Doubles per vector register.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Portable => 2,
            Isa::Avx2Fma => 4,
            Isa::Avx512Fma => 8,
        }
    }
}

/// A kernel body, compiled once per instruction set by [`run`].
pub trait Body {
    type Output;
    /// The body; implementations are `#[inline(always)]` so that they are
    /// compiled inside the `#[target_feature]` wrapper that calls them.
    fn run<const FMA: bool, const W: usize>(self) -> Self::Output;
}

/// `a·b + c`: one fused multiply-add (a single rounding) when `FMA`, else
/// a multiply and an add.
#[inline(always)]
pub fn mul_add<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Runs `body` compiled for the widest instruction set that both this CPU
/// has and `limit` allows (`Isa::Avx512Fma` for the best); returns the set
/// used beside the output.
pub fn run<B: Body>(limit: Isa, body: B) -> (Isa, B::Output) {
    let isa = Isa::detect().min(limit);
    #[cfg(target_arch = "x86_64")]
    {
        match isa {
            Isa::Avx512Fma => {
                #[allow(unsafe_code)]
                // SAFETY: `Isa::detect` found avx512f and fma on this CPU.
                let out = unsafe { avx512(body) };
                return (isa, out);
            }
            Isa::Avx2Fma => {
                #[allow(unsafe_code)]
                // SAFETY: `Isa::detect` found avx2 and fma on this CPU.
                let out = unsafe { avx2(body) };
                return (isa, out);
            }
            Isa::Portable => {}
        }
    }
    (Isa::Portable, body.run::<false, 2>())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(unsafe_code)]
unsafe fn avx512<B: Body>(body: B) -> B::Output {
    body.run::<true, 8>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
unsafe fn avx2<B: Body>(body: B) -> B::Output {
    body.run::<true, 4>()
}

/// Independent chains of fused multiply-adds held in registers: 12 vectors
/// of `W` doubles, `iters` rounds, each round one multiply-add per lane.
/// What the cores can do at best in float64; the flop count is
/// `2 · 12 · W · iters` ([`FmaChains::flops`]).
#[derive(Debug, Clone, Copy)]
pub struct FmaChains {
    pub iters: u64,
    /// Multiplier and addend (pass them through `std::hint::black_box`
    /// so the compiler cannot fold the chains).
    pub a: f64,
    pub b: f64,
}

/// Vectors in flight in [`FmaChains`]: enough to cover the FMA latency
/// (4 cycles) times the FMA units (2) of current cores, and few enough to
/// stay in the 16 registers of AVX2.
pub const CHAINS: usize = 12;

impl FmaChains {
    /// Flops the chains do on `isa` (a multiply-add counts 2).
    pub fn flops(&self, isa: Isa) -> u64 {
        2 * CHAINS as u64 * isa.lanes() as u64 * self.iters
    }
}

impl Body for FmaChains {
    type Output = f64;
    #[inline(always)]
    fn run<const FMA: bool, const W: usize>(self) -> f64 {
        let mut acc = [[0.0f64; W]; CHAINS];
        for (k, v) in acc.iter_mut().enumerate() {
            *v = [k as f64; W];
        }
        for _ in 0..self.iters {
            for v in acc.iter_mut() {
                *v = v.map(|x| mul_add::<FMA>(x, self.a, self.b));
            }
        }
        // Through memory once at the end, which lets LLVM vectorise the chains.
        std::hint::black_box(&mut acc);
        acc.iter().flatten().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instruction_set_gives_the_chains_value() {
        let c = FmaChains {
            iters: 1000,
            a: 0.5,
            b: 1.0,
        };
        // x -> x/2 + 1 converges to 2 for every start: 12 · W lanes of 2.
        for limit in [Isa::Portable, Isa::Avx2Fma, Isa::Avx512Fma] {
            let (isa, s) = run(limit, c);
            assert!(isa <= limit);
            assert_eq!(s, 2.0 * (CHAINS * isa.lanes()) as f64, "{isa:?}");
        }
    }
}
