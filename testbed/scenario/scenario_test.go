package scenario

import "testing"

func TestCheckSplit(t *testing.T) {
	for _, tc := range []struct {
		got, n int
		weight float64
		ok     bool
	}{
		{200, 1000, 20, true},
		{531, 1000, 50, true}, // what CI once saw: two standard deviations off
		{250, 1000, 20, true},
		{350, 1000, 20, false}, // the weight of 35 served for 20
		{650, 1000, 50, false},
		{0, 1000, 20, false},
		{1000, 1000, 100, true},
	} {
		if err := CheckSplit(tc.got, tc.n, tc.weight); (err == nil) != tc.ok {
			t.Errorf("CheckSplit(%d, %d, %v) = %v, want ok=%v", tc.got, tc.n, tc.weight, err, tc.ok)
		}
	}
}
