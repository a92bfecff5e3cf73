//! The venue a strategy trades on, built from what the command line or the
//! fleet file says: the simulated market (paced or not) or Polymarket.
//!
//! Owns only the choice and the construction; never drives a venue.

use crate::supervisor::Pace;
use crate::venue::paper::PaperConfig;
use crate::venue::polymarket::feed::Feeds;
use crate::venue::polymarket::{PolymarketConfig, PolymarketVenue};
use crate::venue::sim::SimConfig;
use crate::venue::simulated::{Pacing, SimVenue};

/// Event-time speed of a simulated market: a multiple of real time, or as
/// fast as the host can go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    Times(f64),
    Max,
}

impl Speed {
    /// Parses `max` or a positive number.
    ///
    /// # Errors
    /// One line saying what a speed is.
    pub fn parse(text: &str) -> Result<Speed, String> {
        if text.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => Ok(Speed::Times(x)),
            _ => Err(format!(
                "`{text}` is not a speed: use a positive number or `max`"
            )),
        }
    }
}

/// How to build a strategy's venue.
#[derive(Debug, Clone)]
pub enum VenueSpec {
    /// The deterministic simulated market with paper execution: the same
    /// configuration (seed included) gives the same feed, which is what lets
    /// a restarted strategy be caught up exactly.
    Sim {
        sim: SimConfig,
        paper: PaperConfig,
        speed: Speed,
    },
    /// The Polymarket CLOB (paper or live execution).
    Polymarket(Box<PolymarketConfig>),
}

/// A built venue.
pub enum ChosenVenue {
    Sim(Box<SimVenue>),
    Polymarket(Box<PolymarketVenue>),
}

/// Polymarket could not be reached: the endpoints or tokens are wrong.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct VenueBuildError(#[from] pub crate::venue::VenueError);

impl VenueSpec {
    /// Builds the venue; for Polymarket this connects.
    ///
    /// # Errors
    /// Polymarket cannot be reached or refuses the markets.
    pub async fn build(&self) -> Result<ChosenVenue, VenueBuildError> {
        self.build_with(None).await
    }

    /// [`Self::build`]; Polymarket's market data comes from `feeds` (one
    /// connection shared by the host's strategies) when given.
    ///
    /// # Errors
    /// Polymarket cannot be reached or refuses the markets.
    pub async fn build_with(&self, feeds: Option<&Feeds>) -> Result<ChosenVenue, VenueBuildError> {
        match self {
            VenueSpec::Sim { sim, paper, speed } => {
                let pacing = match speed {
                    Speed::Max => Pacing::Unpaced,
                    Speed::Times(x) => Pacing::Realtime(*x),
                };
                Ok(ChosenVenue::Sim(Box::new(SimVenue::new(
                    sim.clone(),
                    paper.clone(),
                    pacing,
                ))))
            }
            VenueSpec::Polymarket(cfg) => {
                let venue = match feeds {
                    Some(feeds) => {
                        let feed = feeds.feed_for(cfg).await.map_err(VenueBuildError)?;
                        PolymarketVenue::connect_shared((**cfg).clone(), feed).await
                    }
                    None => PolymarketVenue::connect((**cfg).clone()).await,
                }
                .map_err(VenueBuildError)?;
                Ok(ChosenVenue::Polymarket(Box::new(venue)))
            }
        }
    }

    /// How event time relates to wall time for the strategy's cell.
    pub fn pace(&self) -> Pace {
        match self {
            VenueSpec::Sim {
                speed: Speed::Max, ..
            } => Pace::Unpaced,
            VenueSpec::Sim {
                speed: Speed::Times(x),
                ..
            } => Pace::Speed(*x),
            VenueSpec::Polymarket(_) => Pace::Speed(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_parses_numbers_and_max() {
        assert_eq!(Speed::parse("max").unwrap(), Speed::Max);
        assert_eq!(Speed::parse("60").unwrap(), Speed::Times(60.0));
        assert!(Speed::parse("0").is_err());
        assert!(Speed::parse("fast").is_err());
    }
}
