package scenario

import "testing"

func TestCheckSplit(t *testing.T) {
	for _, tc := range []struct {
		got, n int
		weight float64
		ok     bool
	}{
		{600, 3000, 20, true},
		{680, 3000, 20, true},
		{700, 3000, 20, false},
		{1590, 3000, 50, true},
		{1600, 3000, 50, false},
		{0, 3000, 20, false},
		{3000, 3000, 100, true},
	} {
		if err := CheckSplit(tc.got, tc.n, tc.weight); (err == nil) != tc.ok {
			t.Errorf("CheckSplit(%d, %d, %v) = %v, want ok=%v", tc.got, tc.n, tc.weight, err, tc.ok)
		}
	}
}
