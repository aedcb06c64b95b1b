"""Layer 4, hardware: PE-array timing (fast closed form + register-level reference), memory
plans, and the accelerators built from them, each with timing, energy and area."""
